"""pxetwist.templates: per-machine rendering in Jinja's sandbox, StrictUndefined, and the
templated kernel line written for iPXE."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import TemplateNotFound

from pxetwist import cmdline
from pxetwist.catalog import CatalogEntry, EntryView, scan
from pxetwist.templates import (
    MachineFacts,
    TemplateRenderer,
    TemplateRenderError,
    kernel_arguments,
    machine_variables,
    syntax_problems,
)

BASE = "http://10.77.0.1:8080"
MAC = "52:54:00:12:34:56"
FACTS = MachineFacts(MAC, ip="10.77.0.120", hostname="web3.example.org", arch="bios",
                     uuid="u-1", vars=(("role", "web"), ("site", "lon")),
                     installed_url=f"{BASE}/api/v1/machines/x/installed?token=t")


def entry_with(tmp_path: Path, templates: dict[str, str], cmd: str = "",
               variables: tuple[tuple[str, str], ...] = ()) -> CatalogEntry:
    folder = tmp_path / "inst"
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for name, text in templates.items():
        (folder / "templates" / name).write_text(text)
    return CatalogEntry("inst", "Installer", "linux", folder, kernel="linux", cmdline=cmd,
                        vars=variables, templates=tuple(sorted(templates)))


def view_of(entry: CatalogEntry, kernel_args: str = "") -> EntryView:
    return EntryView(entry, True, entry.name, None, False, kernel_args)


def test_every_variable_is_there(tmp_path: Path) -> None:
    """A template sees mac, mac_hyphen, ip, hostname, arch, uuid, entry, server, files_url,
    templates_url, installed_url and vars (the machine's winning over the entry's)."""
    text = ("{{ mac }} {{ mac_hyphen }} {{ ip }} {{ hostname }} {{ arch }} {{ uuid }} "
            "{{ entry.id }}/{{ entry.name }}/{{ entry.kind }} {{ server }} {{ files_url }} "
            "{{ templates_url }} {{ installed_url }} {{ vars.role }} {{ vars.only_entry }}\n")
    entry = entry_with(tmp_path, {"user-data": text},
                       variables=(("role", "db"), ("only_entry", "e")))
    out = TemplateRenderer().render(entry, "user-data",
                                    machine_variables(BASE, entry, FACTS))
    assert out == (f"{MAC} 52-54-00-12-34-56 10.77.0.120 web3.example.org bios u-1 "
                   f"inst/Installer/linux {BASE} {BASE}/containers/inst/files/ "
                   f"{BASE}/machines/52-54-00-12-34-56/templates/ {FACTS.installed_url} "
                   "web e\n")


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{% include '/etc/passwd' %}",
    "{% include '../entry.ini' %}",
    "{{ lipsum.__globals__ }}",
    "{{ nothing_like_this }}",
    "{{ vars.missing }}",
    "{% for x in range(10**9) %}{% endfor %}",
])
def test_unsafe_or_broken_templates_fail_cleanly(tmp_path: Path, text: str) -> None:
    """Python internals, files outside templates/, an undefined variable, a huge range:
    one TemplateRenderError naming the template, remembered for /containers; fixing the
    template clears it."""
    entry = entry_with(tmp_path, {"preseed.cfg": text})
    (entry.folder / "entry.ini").write_text("[entry]\nkernel = linux\n")
    renderer = TemplateRenderer()
    variables = machine_variables(BASE, entry, FACTS)
    with pytest.raises(TemplateRenderError) as caught:
        renderer.render(entry, "preseed.cfg", variables)
    assert "inst templates/preseed.cfg" in str(caught.value)
    assert "root:" not in str(caught.value)
    [problem] = renderer.problems()
    assert problem["key"] == "templates/preseed.cfg"
    (entry.folder / "templates" / "preseed.cfg").write_text("ok {{ hostname }}\n")
    assert renderer.render(entry, "preseed.cfg", variables) == "ok web3.example.org\n"
    assert renderer.problems() == []


def test_unknown_facts_are_undefined_unless_defaulted(tmp_path: Path) -> None:
    """A machine with no hostname (or never assigned: no installed_url) fails a template
    that needs it; `| default(...)` and `is defined` work."""
    entry = entry_with(tmp_path, {"a": "{{ hostname }}", "b": "{{ hostname | default('n') }}"
                                  "{% if installed_url is defined %}x{% endif %}"})
    variables = machine_variables(BASE, entry, MachineFacts(MAC))
    renderer = TemplateRenderer()
    with pytest.raises(TemplateRenderError, match="hostname"):
        renderer.render(entry, "a", variables)
    assert renderer.render(entry, "b", variables) == "n"
    with pytest.raises(TemplateNotFound):
        renderer.render(entry, "../entry.ini", variables)


def test_includes_stay_in_the_templates_folder(tmp_path: Path) -> None:
    """`{% include %}` of a sibling template works."""
    entry = entry_with(tmp_path, {"common": "c={{ mac }}", "user-data": "{% include 'common' %}!"})
    assert TemplateRenderer().render(
        entry, "user-data", machine_variables(BASE, entry, FACTS)) == f"c={MAC}!"


def test_templated_cmdline_for_ipxe(tmp_path: Path) -> None:
    """entry.ini's cmdline is rendered per machine, then read as the operator's text: its
    own ${...} stays an iPXE setting; the API's kernel_args follow, literal."""
    entry = entry_with(tmp_path, {}, "auto=true url={{ templates_url }}preseed.cfg "
                                     "hostname={{ hostname }} BOOTIF=01-${mac:hexhyp}")
    args, problems = kernel_arguments(view_of(entry, "quiet"),
                                      machine_variables(BASE, entry, FACTS))
    assert args == ["auto=true",
                    f"url={BASE}/machines/52-54-00-12-34-56/templates/preseed.cfg",
                    "hostname=web3.example.org", "BOOTIF=01-${mac:hexhyp}", "quiet"]
    assert problems == []


@pytest.mark.parametrize("value", ["${net0/ip}", "a${x}b", "x\nchain http://evil/",
                                   "a\x1bb"])
def test_a_value_cannot_bring_ipxe_syntax_onto_the_kernel_line(tmp_path: Path,
                                                                value: str) -> None:
    """A variable's value holding `${` or a control character is refused on a kernel line
    (whoever set it: API vars, entry [vars])."""
    entry = entry_with(tmp_path, {}, "role={{ vars.role }}")
    facts = MachineFacts(MAC, vars=(("role", value),))
    with pytest.raises(TemplateRenderError, match="value"):
        kernel_arguments(view_of(entry), machine_variables(BASE, entry, facts))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_no_variable_value_expands_in_ipxe(value: str) -> None:
    """Whatever a machine's variable holds, the kernel line either is refused or holds no
    `${...}` but the operator's own, and no argument iPXE cannot read back."""
    entry = CatalogEntry("e", "E", "linux", Path("/nonexistent"), kernel="k",
                         cmdline="a={{ vars.v }} b=${mac:hexhyp} {{ vars.v }}")
    variables = machine_variables(BASE, entry, MachineFacts(MAC, vars=(("v", value),)))
    try:
        args, _ = kernel_arguments(view_of(entry), variables)
    except TemplateRenderError:
        return
    assert [a for a in args if cmdline.expands(a)] == ["b=${mac:hexhyp}"]
    assert all(cmdline.arg_problem(a, settings_allowed=True) is None for a in args)


def test_scan_reports_template_syntax_and_reads_vars(tmp_path: Path) -> None:
    """A template or cmdline Jinja cannot parse is a catalog problem at scan; [vars] and
    the templates' names are part of the entry."""
    folder = tmp_path / "c" / "inst"
    (folder / "templates").mkdir(parents=True)
    (folder / "linux").write_bytes(b"k")
    (folder / "templates" / "preseed.cfg").write_text("{% if %}\n")
    (folder / "templates" / "user-data").write_text("#cloud-config\n")
    (folder / "entry.ini").write_text("[entry]\nkernel = linux\ncmdline = a={{ x\n"
                                      "[vars]\nMirror = deb.example\n")
    result = scan([tmp_path / "c"])
    entry = result.entries["inst"]
    assert entry.vars == (("Mirror", "deb.example"),)
    assert entry.templates == ("preseed.cfg", "user-data")
    keys = sorted(p.key for p in result.problems)
    assert keys == ["cmdline", "templates/preseed.cfg"]
    assert syntax_problems(folder, "ok={{ x }} #bad")[1:] == [
        ("cmdline", "argument '#bad' starts with '#', which starts an iPXE comment; "
                    "left out of the kernel line")]


def test_readme_examples_render(tmp_path: Path) -> None:
    """The README's "Unattended installs" examples (entry.ini cmdlines, preseed, cloud-init
    user-data) render in the sandbox with a machine's variables, and their kernel lines are
    writable for iPXE."""
    import configparser
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Unattended installs"):]
    section = section[:section.index("\n## ", 5)]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.DOTALL)
    facts = MachineFacts(MAC, ip="10.0.0.5", hostname="web1.example.org",
                         vars=(("password_hash", "$6$x"), ("ssh_key", "ssh-ed25519 AAAA"),
                               ("disk", "/dev/vda")), installed_url=FACTS.installed_url)
    rendered = 0
    for kind, text in blocks:
        if kind == "ini":
            parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"))
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(text)
            entry = CatalogEntry("e", "E", "linux", tmp_path, kernel="k",
                                 cmdline=parser.get("entry", "cmdline"),
                                 vars=tuple(parser.items("vars")))
            args, problems = kernel_arguments(view_of(entry),
                                              machine_variables(BASE, entry, facts))
            assert problems == [] and any("templates/" in a for a in args), args
            rendered += 1
        elif "{{" in text:
            entry = entry_with(tmp_path, {"t": text}, variables=(("mirror", "deb"),
                                                                 ("domain", "example.org")))
            out = TemplateRenderer().render(entry, "t", machine_variables(BASE, entry, facts))
            assert FACTS.installed_url in out and "web1" in out
            rendered += 1
    assert rendered == 4

"""Kernel arguments on iPXE's ``kernel`` line: written so that iPXE, reading the line
its own way (tests/ipxe_lines.py), hands the kernel exactly the operator's arguments."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pxetwist import cmdline
from pxetwist.catalog import CatalogEntry, EntryView, scan
from pxetwist.http import ipxe
from tests.http.helpers import make_rig
from tests.ipxe_lines import kernel_cmdline

BASE = "http://10.77.0.1:8080"
SETTINGS = {"mac:hexhyp": "52-54-00-12-34-56", "net0/ip": "10.77.0.9"}


def _script(text: str, kernel_args: str = "") -> str:
    entry = CatalogEntry("e", "E", "linux", Path("/nowhere"), kernel="k", initrd=("i",),
                         cmdline=text)
    return ipxe.entry_script(BASE, EntryView(entry, True, "E", None, False, kernel_args))


def _expected(text: str, settings_allowed: bool) -> str:
    kept = [arg for arg in cmdline.split_args(text)
            if cmdline.arg_problem(arg, settings_allowed) is None]
    return " ".join(["initrd=i", *kept])


@settings(max_examples=400)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=80))
@example("url=http://h/preseed.cfg?host=a&x=1 BOOTIF=01-$mac quiet")
@example("a\\")
@example("# x || y && z ; w ;x #y")
@example("cost=$5 ${ {x} $}")
def test_literal_args_reach_the_kernel_exactly(text: str) -> None:
    """Any text as API kernel args: iPXE reads back exactly the arguments that can be
    written; the others (and only they) are reported."""
    script = _script("", text)
    assert kernel_cmdline(script) == _expected(text, settings_allowed=False)
    problems = cmdline.problems(text, settings_allowed=False)
    writable = all(cmdline.arg_problem(a, False) is None for a in cmdline.split_args(text))
    assert (problems == []) == writable


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["a=1", "url=http://h/p?x=1&y=2", "$", "${", "}", "&",
                                 "BOOTIF=01-${mac:hexhyp}", "ip=${net0/ip}", "${unknown}",
                                 "#c", "||", ";", "\\", '"q q"', " ", "\t"]), max_size=12))
def test_operator_settings_are_expanded_by_ipxe(parts: list[str]) -> None:
    """entry.ini cmdline: its ${...} reach iPXE, which expands them; the rest is literal."""
    text = " ".join(parts)
    script = _script(text)
    kept = [a for a in cmdline.split_args(text) if cmdline.arg_problem(a, True) is None]
    from tests.ipxe_lines import expand

    assert kernel_cmdline(script, SETTINGS) == " ".join(
        ["initrd=i", *(expand(a, SETTINGS) for a in kept)])


def test_issue_examples_arrive_whole() -> None:
    """The two cmdlines of issue 13 item 6 reach the kernel whole."""
    script = _script("url=http://h/preseed.cfg?host=a&x=1 BOOTIF=01-${mac:hexhyp}")
    assert kernel_cmdline(script, SETTINGS) == (
        "initrd=i url=http://h/preseed.cfg?host=a&x=1 BOOTIF=01-52-54-00-12-34-56")


def test_unwritable_cmdline_is_an_error_in_containers(tmp_path: Path) -> None:
    """An entry.ini cmdline argument iPXE cannot be given is reported by /containers
    (``errors``, key cmdline); the entry stays, with the rest of its arguments."""
    rig = make_rig(tmp_path)
    folder = tmp_path / "catalog" / "odd"
    folder.mkdir()
    (folder / "entry.ini").write_text("[entry]\nkernel = k\ncmdline = quiet || x=$y &&\n")
    (folder / "k").write_bytes(b"k")
    result = scan([tmp_path / "catalog"])
    assert "odd" in result.entries
    errors = [p.as_json() for p in result.problems if p.key == "cmdline"]
    assert len(errors) == 2 and all("left out" in e["error"] for e in errors)
    rig.catalog.load()
    import json

    body = json.loads(rig.get("/containers")[1])
    assert [e["key"] for e in body["errors"]] == ["cmdline", "cmdline"]
    script = rig.get("/containers/odd/boot.ipxe")[1].decode()
    assert kernel_cmdline(script) == "quiet x=$y"

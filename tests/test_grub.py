"""GRUB configs rendered from the boot plan (pxetwist/grub.py): the words GRUB reads
back are exactly the labels, paths and kernel arguments given, whatever they hold."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist import cmdline, grub
from pxetwist.catalog import CatalogEntry, EntryView
from pxetwist.policy import ENTRY, LOCAL, MENU, BootPlan

MAC = "52:54:00:ab:cd:ef"
#: What GRUB's lexer treats specially outside quotes (grub-core/script/yylex.l).
_SPECIAL = set("$;{}|&<>#\"\n")


def lex(line: str) -> list[str]:
    """The words of one GRUB line, as GRUB's lexer reads single-quoted and bare words;
    raises on anything it would treat as syntax (an unquoted ``$``, ``;``, ``{``...)
    except a lone ``{`` or ``}`` word (a block), or on an unclosed quote."""
    if line.startswith("# pxetwist: "):  # our own comment line (no input in it)
        return []
    words: list[str] = []
    current: list[str] | None = None
    i = 0
    while i < len(line):
        c = line[i]
        if c == "'":
            end = line.index("'", i + 1)  # ValueError: unclosed
            current = (current or []) + [line[i + 1:end]]
            i = end + 1
            continue
        if c == "\\":
            current = (current or []) + [line[i + 1]]
            i += 2
            continue
        if c in " \t":
            if current is not None:
                words.append("".join(current))
            current = None
            i += 1
            continue
        if c in _SPECIAL:
            if c in "{}" and current is None and (i + 1 == len(line) or line[i + 1] == " "):
                words.append(c)
                i += 1
                continue
            raise AssertionError(f"unquoted {c!r} in {line!r}")
        current = (current or []) + [c]
        i += 1
    if current is not None:
        words.append("".join(current))
    return words


def view(entry_id: str = "lab", label: str = "Lab", cmdline: str = "", kernel_args: str = "",
         kind: str = "linux", kernel: str = "vmlinuz",
         initrd: tuple[str, ...] = ("initrd.img",), file: str = "") -> EntryView:
    entry = CatalogEntry(entry_id, label, kind, Path("/srv/catalog") / entry_id, file=file,
                         kernel=kernel if kind == "linux" else "",
                         initrd=initrd if kind == "linux" else (), cmdline=cmdline)
    return EntryView(entry, True, label, None, False, kernel_args)


@given(st.text())
def test_quote_reads_back_as_one_word(text: str) -> None:
    """Any text, quoted for GRUB, reads back through GRUB's lexer as that one word."""
    assert lex(grub.quote(text)) == [text]


_ARG_CHARS = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=300)
@given(st.lists(st.text(_ARG_CHARS, min_size=1, max_size=12), max_size=6),
       st.text(_ARG_CHARS, max_size=40))
def test_linux_line_holds_exactly_the_writable_arguments(args: list[str], label: str) -> None:
    """Each argument GRUB can pass as written arrives as one word, in order; the others
    (control characters, \\ ' ", iPXE syntax) are reported, never altered."""
    text = " ".join(args)
    plan = BootPlan(ENTRY, "assigned", entry=view(label=label or "x", kernel_args=text),
                    entry_id="lab")
    config = grub.plan_config(plan, MAC, [], None, 5)
    written, problems = grub.grub_args(text, MAC, False)
    linux = next(line for line in config.split("\n") if line.startswith("linux "))
    words = lex(linux)
    assert words == ["linux", "/pxetwist/entries/lab/vmlinuz", *written]
    for arg in written:
        assert not grub._ESCAPED_BY_GRUB.intersection(arg)
        assert not any(ord(c) < 32 or ord(c) == 127 for c in arg)
    assert len(written) + len(problems) == len(cmdline.split_args(text))
    for line in config.split("\n"):
        lex(line)  # every line reads back without any syntax from input


@given(st.lists(st.text(_ARG_CHARS, min_size=1, max_size=30), min_size=1, max_size=4))
def test_menu_titles_read_back_and_nothing_injects(labels: list[str]) -> None:
    """Menu labels read back as written and cannot add GRUB commands."""
    views = [view(f"e{i}", label) for i, label in enumerate(labels)]
    config = grub.plan_config(BootPlan(MENU, "menu"), MAC, views, views[-1], 3)
    titles = [lex(line)[1] for line in config.split("\n") if line.startswith("menuentry ")]
    assert titles == [grub.label_text(label) for label in labels] + ["Boot from local disk"]
    assert f"set default={len(labels) - 1}" in config
    for line in config.split("\n"):
        lex(line)


def test_injection_attempts_stay_words() -> None:
    """The issue's list: ;, newlines, $, quotes, braces."""
    nasty = "x'; reboot; echo '$(y) {z}\nlinux /evil"
    plan = BootPlan(ENTRY, "assigned", entry=view(label=nasty, kernel_args="a;b c$d {e}"),
                    entry_id="lab")
    config = grub.plan_config(plan, MAC, [], None, 5)
    lines = config.split("\n")
    assert not any(line.startswith(("reboot", "linux /evil")) for line in lines)
    linux = next(line for line in lines if line.startswith("linux "))
    assert lex(linux)[2:] == ["a;b", "c$d", "{e}"]
    echo = next(line for line in lines if line.startswith("echo 'pxetwist: booting"))
    assert lex(echo)[1] == "pxetwist: booting x'; reboot; echo '$(y) {z}_linux /evil"


def test_entry_cmdline_expands_mac_settings_and_drops_what_grub_would_change() -> None:
    """iPXE MAC settings are expanded for the machine; arguments GRUB would alter are left out
    and reported."""
    args, problems = grub.grub_args(
        "console=ttyS0 BOOTIF=01-${mac:hexhyp} m=${net0/mac} q=\"x\" b=a\\b s=${serial}",
        MAC, settings_allowed=True)
    assert args == ["console=ttyS0", "BOOTIF=01-52-54-00-ab-cd-ef", f"m={MAC}"]
    assert len(problems) == 3
    # an API caller's ${...} is refused as for iPXE
    assert grub.grub_args("x=${mac}", MAC, settings_allowed=False)[0] == []


def test_entry_kinds_under_grub() -> None:
    """linux boots with linux/initrd, efi with chainloader; ipxe, iso and file entries are
    refused with a reason."""
    efi = view(kind="efi", file="tool.efi")
    assert grub.entry_lines(efi, MAC).lines == ("chainloader '/pxetwist/entries/lab/tool.efi'",)
    for kind, file in (("iso", "a.iso"), ("ipxe", "a.ipxe"), ("file", "a.img")):
        refused = grub.entry_lines(view(kind=kind, file=file), MAC).refused
        assert "needs iPXE: Secure Boot must be off" in refused
    mirror = view(kernel="http://mirror/vmlinuz")
    assert "no HTTP" in grub.entry_lines(mirror, MAC).refused
    config = grub.plan_config(BootPlan(ENTRY, "x", entry=view(kind="iso", file="a.iso"),
                                       entry_id="lab"), MAC, [], None, 1)
    assert "needs iPXE" in config and config.rstrip().endswith("exit")


def test_menu_skips_what_grub_cannot_boot_and_local_and_entry_point() -> None:
    """The GRUB menu leaves out entries GRUB cannot boot; local boot exits; grub.cfg hands over
    to the MAC's config."""
    views = [view("a", "A", kind="iso", file="a.iso"), view("b", "B")]
    config = grub.plan_config(BootPlan(MENU, "menu"), MAC, views, views[0], 0)
    assert "set default=0" in config and "set timeout=0" in config
    assert "'A'" not in config and "menuentry 'B'" in config
    assert grub.plan_config(BootPlan(LOCAL, "local"), MAC, [], None, 1).rstrip().endswith("exit")
    empty = grub.plan_config(BootPlan(MENU, "menu"), MAC, [], None, 1)
    assert "no boot entries" in empty and empty.rstrip().endswith("exit")
    point = grub.entry_point_config()
    assert "configfile /grub/pxetwist/${net_default_mac}.cfg" in point

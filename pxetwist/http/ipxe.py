"""iPXE scripts: the boot entry point, the menu, one script per catalog entry, local boot.

Everything that reaches a script from a label, a name or a URL passes through
:func:`script_text` or :func:`script_url`: iPXE expands ``${...}`` anywhere on a
line and treats newlines, ``&&``, ``||`` and ``#`` specially, so only a
conservative set of characters is let through. Kernel arguments are written
exactly, as :mod:`pxetwist.cmdline` says iPXE reads them (an operator's
``entry.ini`` may use iPXE settings such as ``${mac:hexhyp}``, an API caller
may not). The other ``${...}`` in these scripts (``${mac:hexhyp}``,
``${buildarch}``) are written here, never taken from input.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from urllib.parse import quote

from pxetwist import cmdline
from pxetwist.catalog import CatalogEntry, EntryView, is_url
from pxetwist.machine_source import ExternalBoot

#: Characters allowed in labels.
_UNSAFE_TEXT = re.compile(r"[^A-Za-z0-9 _.,:/=+@%()\[\]-]")

#: What iPXE appends to every URL it fetches, so the server knows who asks.
MAC_QUERY = "mac=${mac:hexhyp}"
BOOT_QUERY = "mac=${mac:hexhyp}&arch=${buildarch}&platform=${platform}"

LOCAL_BOOT = "#!ipxe\necho pxetwist: booting from local disk\nexit\n"


class UnsafeTextError(ValueError):
    """Text that cannot go into an iPXE script (used to refuse API input)."""


def check_label(text: str) -> str:
    """A label as given, or raise :class:`UnsafeTextError` naming the first bad character."""
    bad = _UNSAFE_TEXT.search(text)
    if bad or len(text) > 80:
        raise UnsafeTextError(
            f"character {bad.group()!r} is not allowed" if bad else "longer than 80 characters"
        )
    return text


def check_args(text: str) -> str:
    """Kernel arguments of an API caller as given, or raise :class:`UnsafeTextError`:
    every argument must arrive literally (no ``${...}``, no ``#`` first, no ``||``,
    ``&&`` or ``;`` alone), and only spaces separate them."""
    if len(text) > 1024:
        raise UnsafeTextError("longer than 1024 characters")
    odd = next((c for c in text if c != " " and unicodedata.category(c)[0] in "CZ"), None)
    if odd is not None:
        raise UnsafeTextError(f"character {odd!r} is not allowed (only spaces separate"
                              " arguments; no control or separator characters)")
    problems = cmdline.problems(text, settings_allowed=False)
    if problems:
        raise UnsafeTextError(problems[0])
    return text


def script_text(text: str) -> str:
    """Display text made safe for a script line: unsafe characters become ``_``."""
    return _UNSAFE_TEXT.sub("_", text)[:80]


def script_args(text: str, settings_allowed: bool = False) -> str:
    """Kernel arguments for a ``kernel`` line: each argument as it is, one space apart;
    an argument iPXE could not read back (see :mod:`pxetwist.cmdline`) is left out, never
    altered (the catalog and the API report or refuse those).

    :param settings_allowed: the operator's own text (``entry.ini``), whose ``${...}``
        are iPXE settings meant to be expanded.
    """
    return " ".join(cmdline.kernel_args(text, settings_allowed)[0])


def script_url(url: str) -> str:
    """A mirror URL made safe: anything outside URL syntax is percent-encoded, and
    ``$``, ``{``, ``}`` and spaces with it."""
    return quote(url, safe=":/?=&%.-_~@+,;")


def entry_file_url(base: str, entry: CatalogEntry, name: str) -> str:
    """Where iPXE fetches one of an entry's files: a mirror URL, or ours with the MAC."""
    if is_url(name):
        return script_url(name)
    return f"{base}/containers/{entry.id}/files/{quote(name, safe='')}?{MAC_QUERY}"


@functools.lru_cache(maxsize=512)
def entry_script(base: str, view: EntryView, kernel_args: tuple[str, ...] | None = None) -> str:
    """The script that boots one entry, by kind.

    Linux: ``kernel`` with ``initrd=<name>`` for each initrd (the UEFI stub of this
    iPXE only hands over initrds it is told about), then ``initrd --name``, ``boot``.
    ``kernel_args``: this machine's arguments (:func:`pxetwist.templates.kernel_arguments`,
    already writable); ``None``: the entry's own, untemplated.
    Pure, so it is cached: an entry and its settings are one frozen value, and any change
    to them is another key (every booting machine asks for the same few scripts).
    """
    entry = view.entry
    lines = ["#!ipxe", f"echo pxetwist: booting {script_text(view.label)}"]
    if entry.kind == "linux":
        initrds = [(_initrd_name(i, source), entry_file_url(base, entry, source))
                   for i, source in enumerate(entry.initrd)]
        cmdlines = (((entry.cmdline, True), (view.kernel_args, False)) if kernel_args is None
                    else ((" ".join(kernel_args), True),))
        lines += _linux_lines(entry_file_url(base, entry, entry.kernel), initrds, cmdlines)
    elif entry.kind == "efi":
        lines.append(f"chain {entry_file_url(base, entry, entry.file)} || goto failed")
    elif entry.kind == "iso":
        lines.append(f"sanboot --no-describe {entry_file_url(base, entry, entry.file)}"
                     " || goto failed")
    elif is_url(entry.file):  # file or ipxe on a mirror: straight there
        lines.append(f"chain {script_url(entry.file)} || goto failed")
    else:  # file (an ipxe entry's own script is served as it is)
        lines.append(f"chain {base}/containers/{entry.id}?{MAC_QUERY} || goto failed")
    return "\n".join(lines + _FAILED_TO_LOCAL)


def external_script(boot: ExternalBoot) -> str:
    """The script for an answer of the external machine source (``[boot] api_url``):
    its own iPXE script as given (the operator's service is trusted like the catalog's
    ``.ipxe`` files), else its kernel and initrds, whose URLs and arguments are made safe
    like the catalog's."""
    if boot.ipxe_script:
        return boot.ipxe_script
    initrds = [(_initrd_name(i, url), script_url(url)) for i, url in enumerate(boot.initrd)]
    lines = ["#!ipxe", "echo pxetwist: booting from the machine source",
             *_linux_lines(script_url(boot.kernel), initrds, ((boot.cmdline, False),))]
    return "\n".join(lines + _FAILED_TO_LOCAL)


#: The end of every entry script: a failed boot falls back to the local disk.
_FAILED_TO_LOCAL = [":failed", "echo pxetwist: boot failed, booting from local disk", "sleep 3",
                    "exit", ""]


def _linux_lines(kernel_url: str, initrds: list[tuple[str, str]],
                 cmdlines: tuple[tuple[str, bool], ...]) -> list[str]:
    """``kernel`` (with ``initrd=<name>`` for each initrd: the UEFI stub of this iPXE only
    hands over initrds it is told about, LAB-NOTES), the ``initrd`` lines, ``boot``.

    :param initrds: ``(name, url)`` pairs, the URLs already safe for a script.
    :param cmdlines: ``(kernel arguments, settings_allowed)``, written by
        :func:`script_args`.
    """
    args = " ".join(part for part in (" ".join(f"initrd={name}" for name, _ in initrds),
                                      *(script_args(c, ok) for c, ok in cmdlines)) if part)
    kernel = f"kernel {kernel_url} {args}".rstrip(" ")
    if kernel.endswith("\\"):
        kernel += " "  # a line ending in a backslash would continue on the next one
    return [kernel,
            *(f"initrd --name {name} {url}" for name, url in initrds),
            "boot || goto failed"]


def _initrd_name(index: int, source: str) -> str:
    """The name iPXE gives an initrd (and the kernel line's ``initrd=``): its file name."""
    base = source.rsplit("/", 1)[-1].split("?", 1)[0]
    return re.sub(r"[^A-Za-z0-9._-]", "_", base) or f"initrd{index}"


def chain_script(url: str) -> str:
    """A script that chains to ``url`` (a URL we built), falling back to local boot."""
    return f"#!ipxe\nchain --autofree {url} || goto failed\n:failed\nexit\n"


def entry_point_script(base: str, tries: int = 3, path: str = "/pxe/boot.ipxe") -> str:
    """What a client asking without its MAC gets: the same URL (``path``) again with the
    MAC, arch and platform iPXE knows, retried ``tries`` times before booting locally."""
    return (
        "#!ipxe\n"
        "set pxetwist_tries:int32 0\n"
        ":retry\n"
        f"chain --autofree {base}{path}?{BOOT_QUERY} && exit ||\n"
        "inc pxetwist_tries\n"
        f"iseq ${{pxetwist_tries}} {tries} && goto local ||\n"
        "echo pxetwist: server did not answer, retrying\n"
        "sleep 2\n"
        "goto retry\n"
        ":local\n"
        "echo pxetwist: server unreachable, booting from local disk\n"
        "exit\n"
    )


def menu_script(base: str, menu: list[EntryView], default: EntryView | None,
                timeout: int) -> str:
    """The boot menu: offered entries in order, then local boot, iPXE shell and retry.

    ``timeout`` 0 boots the default at once (iPXE's own 0 would mean "wait forever").
    """
    if not menu:
        return ("#!ipxe\necho pxetwist: no boot entries are offered; booting from local disk\n"
                "sleep 3\nexit\n")
    target = f"e-{default.entry.id}" if default is not None else f"e-{menu[0].entry.id}"
    lines = ["#!ipxe", ":start"]
    if timeout == 0:
        lines.append(f"goto {target}")
    lines += ["menu pxetwist boot menu", "item --gap -- Boot entries"]
    for view in menu:
        lines.append(f"item e-{view.entry.id} {script_text(view.label)}")
    lines += [
        "item --gap -- Other",
        "item local Boot from local disk",
        "item shell iPXE shell",
        "item retry Reload this menu",
        f"choose --default {target} --timeout {timeout * 1000} target && goto ${{target}}"
        " || goto local",
    ]
    for view in menu:
        lines += [f":e-{view.entry.id}",
                  f"chain {base}/containers/{view.entry.id}/boot.ipxe?{MAC_QUERY}"
                  " || goto failed"]
    lines += [
        ":local", "exit",
        ":shell", "shell", "goto start",
        ":retry", f"chain {base}/pxe/menu.ipxe?{MAC_QUERY} || goto failed",
        ":failed", "echo pxetwist: boot failed", "prompt --timeout 5000 Press a key to retry ||",
        "goto start", "",
    ]
    return "\n".join(lines)

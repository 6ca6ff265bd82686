"""GRUB configs: the same boot plan as the iPXE scripts, written for the signed GRUB.

Debian's signed network GRUB (``grubnetx64.efi.signed``, served as ``grubx64.efi``)
asks TFTP for ``grub/grub.cfg`` only. :func:`entry_point_config` answers it with a
config that hands over to ``grub/pxetwist/<MAC>.cfg`` (from GRUB's own
``$net_default_mac``), which :func:`plan_config` renders from the
:class:`~pxetwist.policy.BootPlan` of that MAC: an entry, the menu, or local boot
(``exit``, so the firmware moves on). This module only writes; the decision is
:func:`pxetwist.policy.plan_boot`'s.

Quoting: every word that comes from input (labels, file names, kernel arguments) is
written in single quotes (:func:`quote`); inside them GRUB's lexer takes every character
as it is (``$``, ``;``, ``{}``, ``#``, newlines), and a ``'`` is closed, escaped and
reopened (``'\\''``). Labels are also cut to printable characters.

Kernel arguments: GRUB's ``linux`` joins its arguments with spaces, but writes a ``\\``,
``'`` or ``"`` inside one with a backslash before it (``grub_create_loader_cmdline``), so
such an argument cannot reach the kernel as written: it is left out and reported, never
altered (:func:`grub_args`). iPXE settings in an operator's ``entry.ini``
(``${mac:hexhyp}``, ``${mac}``, ``${net0/mac}``...) are expanded here for the MAC the
config is made for; any other ``${...}`` means nothing to GRUB and is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from attrs import frozen

from pxetwist import cmdline
from pxetwist.catalog import EntryView, is_url
from pxetwist.policy import ENTRY, EXTERNAL, MENU, BootPlan
from pxetwist.templates import TemplateRenderError

#: Where an entry's files are served over TFTP: ``/pxetwist/entries/<id>/<name>``.
ENTRY_FILES = "pxetwist/entries"
#: Where the per-machine config is served: ``grub/pxetwist/<MAC>.cfg``.
MACHINE_CONFIGS = "grub/pxetwist"
#: The file the signed network GRUB asks for (its prefix is built in: ``/grub``).
GRUB_CFG = "grub/grub.cfg"

#: Characters GRUB writes with a backslash in front on the kernel command line.
_ESCAPED_BY_GRUB = set("\\'\"")
#: iPXE settings a per-machine config can expand itself (the MAC is known).
_MAC_SETTING = re.compile(r"\$\{(?:net[0-9X]/)?mac(:hexhyp|:hex)?\}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def quote(word: str) -> str:
    """``word`` as one GRUB word, taken literally: single quotes, ``'`` as ``'\\''``."""
    return "'" + word.replace("'", "'\\''") + "'"


def label_text(text: str) -> str:
    """A label for ``echo``/``menuentry``: control characters become ``_`` (a newline in
    a title is legal GRUB but a broken menu), at most 80 characters."""
    return _UNPRINTABLE.sub("_", text)[:80]


def expand_mac_settings(arg: str, mac: str) -> str:
    """``arg`` with the iPXE MAC settings replaced by ``mac`` as iPXE would write them
    (``${mac}``: ``52:54:...``, ``${mac:hexhyp}``: ``52-54-...``, ``${mac:hex}``)."""

    def value(match: re.Match[str]) -> str:
        return mac.replace(":", "-") if match.group(1) == ":hexhyp" else mac

    return _MAC_SETTING.sub(value, arg)


def grub_args(text: str, mac: str, settings_allowed: bool) -> tuple[list[str], list[str]]:
    """``text`` as arguments for GRUB's ``linux`` line: ``(args, problems)``.

    The text is cut into arguments as iPXE cuts it (one entry.ini means the same under
    both loaders); an argument iPXE could not be given is left out here too, and so is
    one GRUB would change (``\\``, ``'``, ``"``) or an iPXE setting GRUB cannot know.

    :param mac: the machine the config is made for (its iPXE MAC settings expand).
    :param settings_allowed: the operator's own text (``entry.ini``).
    """
    args: list[str] = []
    problems: list[str] = []
    for arg in cmdline.split_args(text):
        problem = cmdline.arg_problem(arg, settings_allowed)
        if problem is None and settings_allowed:
            arg = expand_mac_settings(arg, mac)
            if cmdline.expands(arg):
                problem = f"argument {arg!r} holds an iPXE setting GRUB does not know"
        if problem is None and _ESCAPED_BY_GRUB.intersection(arg):
            problem = (f"argument {arg!r} holds \\, ' or \", which GRUB passes to the "
                       "kernel with a backslash added")
        if problem is None:
            args.append(arg)
        else:
            problems.append(problem)
    return args, problems


def entry_args(view: EntryView, mac: str,
               cmdline_text: str | None = None) -> tuple[list[str], list[str]]:
    """The kernel arguments a linux entry boots with under GRUB, for ``mac``: the
    entry's ``cmdline`` (``cmdline_text``: as rendered for ``mac`` when it is a template,
    :meth:`pxetwist.http.unattended.Unattended.grub_args`), then the operator's menu
    ``kernel_args`` (the same two, in the same order, as the iPXE script). The one place
    they are put together for GRUB."""
    text = view.entry.cmdline if cmdline_text is None else cmdline_text
    own, own_problems = grub_args(text, mac, True)
    extra, extra_problems = grub_args(view.kernel_args, mac, False)
    return own + extra, own_problems + extra_problems


#: ``(view, mac) -> (args, problems)``: how a linux entry's arguments are made; may raise
#: :class:`~pxetwist.templates.TemplateRenderError` (the entry is then refused).
ArgsFor = Callable[[EntryView, str], tuple[list[str], list[str]]]


def entry_file_path(entry_id: str, name: str) -> str:
    """The TFTP path GRUB fetches one of an entry's files from."""
    return f"/{ENTRY_FILES}/{entry_id}/{name}"


@frozen
class GrubEntry:
    """How one entry boots under GRUB: ``lines`` (a body for ``menuentry`` or the
    config itself), or ``refused`` with the reason when GRUB cannot boot it."""

    lines: tuple[str, ...] = ()
    refused: str = ""


def refusal(view: EntryView) -> str:
    """Why GRUB cannot boot ``view``, or ``""`` if it can."""
    entry = view.entry
    if entry.kind in ("ipxe", "iso", "file"):
        return (f"a {entry.kind} entry needs iPXE: Secure Boot must be off (efi_loader "
                "ipxe), or use a linux entry")
    names = (entry.kernel, *entry.initrd) if entry.kind == "linux" else (entry.file,)
    if any(is_url(name) for name in names):
        return ("its files are on a mirror URL and the signed GRUB has no HTTP: put them "
                "in the entry's folder")
    return ""


def entry_lines(view: EntryView, mac: str, args_for: ArgsFor = entry_args) -> GrubEntry:
    """The GRUB commands that boot ``view`` (linux: ``linux`` + ``initrd``; efi:
    ``chainloader``), or why it cannot be booted under GRUB."""
    refused = refusal(view)
    if refused:
        return GrubEntry(refused=refused)
    entry = view.entry
    if entry.kind == "efi":
        return GrubEntry((f"chainloader {quote(entry_file_path(entry.id, entry.file))}",))
    try:
        args, _ = args_for(view, mac)
    except TemplateRenderError as e:
        return GrubEntry(refused=f"its cmdline cannot be rendered for this machine: {e}")
    linux = " ".join(["linux", quote(entry_file_path(entry.id, entry.kernel)),
                      *(quote(arg) for arg in args)])
    lines = [linux]
    if entry.initrd:
        lines.append(" ".join(["initrd", *(quote(entry_file_path(entry.id, name))
                                           for name in entry.initrd)]))
    return GrubEntry(tuple(lines))


LOCAL = ("echo 'pxetwist: booting from local disk'", "exit")
_FAILED = ("echo 'pxetwist: boot failed, booting from local disk'", "sleep 3", "exit")


def entry_point_config() -> str:
    """``grub/grub.cfg``: hand over to this machine's own config, named by GRUB's
    ``$net_default_mac``; if that cannot be read, boot from the local disk."""
    return "\n".join([
        "# pxetwist: per-machine GRUB config",
        "set timeout_style=menu",
        f"configfile /{MACHINE_CONFIGS}/${{net_default_mac}}.cfg",
        "echo 'pxetwist: no config for this machine'",
        *LOCAL, ""])


def plan_config(plan: BootPlan, mac: str, menu: list[EntryView],
                default: EntryView | None, timeout: int,
                args_for: ArgsFor = entry_args) -> str:
    """The GRUB config that carries out ``plan`` for ``mac``."""
    lines = ["# pxetwist: " + label_text(plan.action)]
    if plan.action == ENTRY and plan.entry is not None:
        view = plan.entry
        booting = entry_lines(view, mac, args_for)
        if booting.refused:
            lines += [f"echo {quote(label_text(f'pxetwist: cannot boot {view.label}: '))}",
                      f"echo {quote(booting.refused)}", *_FAILED]
        else:
            lines += [f"echo {quote('pxetwist: booting ' + label_text(view.label))}",
                      *booting.lines, "boot", *_FAILED]
    elif plan.action == MENU:
        lines += menu_lines(mac, menu, default, timeout, args_for)
    elif plan.action == EXTERNAL:
        lines += ["echo 'pxetwist: the machine source answers with URLs; GRUB has no HTTP'",
                  *_FAILED]
    else:
        lines += list(LOCAL)
    return "\n".join([*lines, ""])


def menu_lines(mac: str, menu: list[EntryView], default: EntryView | None, timeout: int,
               args_for: ArgsFor = entry_args) -> list[str]:
    """The menu: the offered entries GRUB can boot, in order, then local boot; the
    default boots after ``timeout`` seconds (0: at once)."""
    bootable = [(view, booting) for view in menu
                if not (booting := entry_lines(view, mac, args_for)).refused]
    if not bootable:
        return ["echo 'pxetwist: no boot entries GRUB can boot are offered'", *LOCAL]
    chosen = next((i for i, (view, _) in enumerate(bootable)
                   if default is not None and view.entry.id == default.entry.id), 0)
    lines = [f"set default={chosen}", f"set timeout={timeout}"]
    for view, booting in bootable:
        lines.append(f"menuentry {quote(label_text(view.label))} --id "
                     f"{quote('e-' + view.entry.id)} {{")
        lines += [f"  echo {quote('pxetwist: booting ' + label_text(view.label))}",
                  *(f"  {line}" for line in booting.lines), "  boot", "}"]
    lines += ["menuentry 'Boot from local disk' --id local {", "  exit", "}"]
    return lines

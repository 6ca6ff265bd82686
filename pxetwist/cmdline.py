"""Kernel arguments as iPXE reads them: what can be written on a ``kernel`` line, and how.

iPXE (``src/image/script.c``, ``src/core/exec.c``, ``src/core/settings.c``) has no
quoting at all. A script line loses a trailing CR and, if it then ends in ``\\``,
continues on the next line; the line is split on ``" \\t\\n\\r\\f\\v"``; a token that
starts with ``#`` ends the command (a comment), a token that is ``||``, ``&&`` or ``;``
separates commands; then every token is expanded: while it holds ``${`` with a ``}``
somewhere after it, the innermost ``${name}`` is replaced by that setting (empty when
unknown), and the result is scanned again. ``kernel`` joins the arguments after its URL
with one space each.

So an argument is written as itself, one space between arguments, and everything else
in it (``$``, ``&``, ``?``, ``"``, ``{``, non-ASCII) is passed through untouched, except:

- a ``${...}`` is always expanded, so it cannot be written literally: an operator's
  ``entry.ini`` may use it on purpose (``BOOTIF=01-${mac:hexhyp}``), an API caller may not;
- an argument starting with ``#``, or one that is ``||``, ``&&`` or ``;``, and control
  characters, cannot be written at all;
- runs of whitespace between arguments become one space (whitespace *inside* an
  argument does not exist for iPXE).

This module only decides; :mod:`pxetwist.http.ipxe` writes the lines and the catalog
reports what an ``entry.ini`` asks for that cannot be written.
"""

from __future__ import annotations

import re

#: What iPXE's ``isspace()`` (``src/include/ctype.h``) calls whitespace.
IPXE_SPACE = " \t\n\r\f\v"
#: Tokens that separate commands on an iPXE line.
TERMINATORS: frozenset[str] = frozenset({"||", "&&", ";"})

_SPLIT = re.compile(f"[{re.escape(IPXE_SPACE)}]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: A ``$`` directly followed by ``{``, with a ``}`` anywhere after it: iPXE expands it.
_SETTING = re.compile(r"\$\{.*\}", re.DOTALL)


def split_args(text: str) -> list[str]:
    """``text`` cut where iPXE cuts a line into tokens."""
    return [part for part in _SPLIT.split(text) if part]


def expands(arg: str) -> bool:
    """Whether iPXE would expand a setting (``${...}``) in ``arg``."""
    return _SETTING.search(arg) is not None


def arg_problem(arg: str, settings_allowed: bool) -> str | None:
    """Why ``arg`` (one token, no whitespace) cannot go on a ``kernel`` line as it is,
    or ``None`` if it can.

    :param settings_allowed: the text is the operator's (``entry.ini``): a ``${...}`` in
        it is an iPXE setting meant to be expanded. Otherwise it must arrive literally.
    """
    if _CONTROL.search(arg):
        return f"argument {arg!r} holds a control character"
    if arg.startswith("#"):
        return f"argument {arg!r} starts with '#', which starts an iPXE comment"
    if arg in TERMINATORS:
        return f"argument {arg!r} separates iPXE commands"
    if not settings_allowed and expands(arg):
        return f"argument {arg!r} holds '${{...}}', which iPXE would expand"
    return None


def kernel_args(text: str, settings_allowed: bool) -> tuple[list[str], list[str]]:
    """``text`` as kernel arguments for a ``kernel`` line: ``(args, problems)``.

    ``args`` are the arguments that can be written (each as it is); ``problems`` say
    which could not, and why (those are left out, never altered).
    """
    args: list[str] = []
    problems: list[str] = []
    for arg in split_args(text):
        problem = arg_problem(arg, settings_allowed)
        if problem is None:
            args.append(arg)
        else:
            problems.append(problem)
    return args, problems


def problems(text: str, settings_allowed: bool) -> list[str]:
    """Why parts of ``text`` cannot be written as kernel arguments (empty: all can)."""
    return kernel_args(text, settings_allowed)[1]

"""iPXE's own reading of a script line, re-done in Python for tests.

Follows ``src/image/script.c`` (``process_script``: trailing CR, backslash
continuation), ``src/core/exec.c`` (``split_command`` on ``isspace``,
``command_terminator``: ``#`` comments, ``||``, ``&&``, ``;``) and
``src/core/settings.c`` (``expand_settings``: the innermost ``${name}`` is replaced
until none is left; an unknown setting is empty). Independent of
:mod:`pxetwist.cmdline` on purpose: the tests check that module against this.
"""

from __future__ import annotations

_SPACE = " \t\n\r\f\v"  # iPXE's isspace()


def script_lines(script: str) -> list[str]:
    """The logical lines of a script, as ``process_script`` joins and trims them."""
    lines: list[str] = []
    pending = ""
    for raw in script.split("\n"):
        line = pending + raw
        if line.endswith("\r"):
            line = line[:-1]
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        lines.append(line)
    return lines


def expand(token: str, settings: dict[str, str]) -> str:
    """``expand_settings``: replace the innermost ``${...}`` until none is left."""
    while True:
        start = end = -1
        for i, char in enumerate(token):
            if token.startswith("${", i):
                start = i
            if start >= 0 and char == "}":
                end = i
                break
        if end < 0:
            return token
        token = token[:start] + settings.get(token[start + 2:end], "") + token[end + 1:]


def commands(line: str, settings: dict[str, str] | None = None) -> list[list[str]]:
    """The commands on one logical line, each as its expanded argv."""
    tokens = [t for t in _split(line) if t]
    found: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token.startswith("#"):
            break
        if token in ("||", "&&", ";"):
            found.append(current)
            current = []
            continue
        current.append(token)
    found.append(current)
    return [[expand(t, settings or {}) for t in argv] for argv in found if argv]


def _split(line: str) -> list[str]:
    tokens: list[str] = []
    current = ""
    for char in line:
        if char in _SPACE:
            tokens.append(current)
            current = ""
        else:
            current += char
    tokens.append(current)
    return tokens


def kernel_cmdline(script: str, settings: dict[str, str] | None = None) -> str:
    """The command line the script's (only) ``kernel`` command hands the kernel: the
    arguments after the URL, joined by one space (``concat_args``)."""
    argvs = [argv for line in script_lines(script) for argv in commands(line, settings)
             if argv[0] == "kernel"]
    assert len(argvs) == 1, argvs
    [argv] = argvs
    assert len(argv) >= 2 and not argv[1].startswith("-")
    return " ".join(argv[2:])

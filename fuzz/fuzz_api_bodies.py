"""atheris target: the JSON API's request checking.

Bytes are a request body (and query string) for the mutation routes' checkers:
``read_json``, ``menu_changes``, ``assignment`` and ``events_query``. Each must
return or raise BadRequestError; whatever ``menu_changes`` accepts must be text
that cannot break out of an iPXE script line, and ``script_args`` must write only the
caller's own arguments. Run:
``python fuzz/fuzz_api_bodies.py -atheris_runs=1000000 fuzz/corpus/api``.
"""

from __future__ import annotations

import io
import json
import re
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from pxetwist.http import api
    from pxetwist.http.ipxe import script_args, script_text

#: Characters that would let text escape its line or expand in an iPXE script.
_FORBIDDEN = set("\n\r\0${}&|#;\"'`<>\\")


class _Request:
    """The two things the checkers read from a request."""

    def __init__(self, body: bytes, args: dict[bytes, list[bytes]]) -> None:
        self.content = io.BytesIO(body)
        self.args = args


def _safe(text: str, what: str) -> None:
    bad = _FORBIDDEN.intersection(text)
    if bad:
        raise AssertionError(f"{what} let {sorted(bad)} through: {text!r}")


def _args_safe(text: str) -> None:
    """``script_args`` writes arguments exactly (issue 13 item 6), so ``&`` or ``;`` may
    stay inside one; what iPXE reads back must still be only kernel arguments: no line
    break or control character, no ``${``, no token that starts a comment or separates
    commands, and nothing that was not one of the caller's arguments."""
    line = script_args(text)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line) or "${" in line:
        raise AssertionError(f"script_args let a control character or setting through: {line!r}")
    given = re.split("[ \t\n\r\f\v]+", text)  # iPXE's white space: ASCII only
    for arg in line.split(" ") if line else []:
        if arg.startswith("#") or arg in ("||", "&&", ";") or arg not in given:
            raise AssertionError(f"script_args wrote {arg!r} from {text!r}")


_ALPHABET = list("aZ09 _.,:/=+@%()[]-") * 12 + list("${}\n\r&|#;\\\"'`<>\t\x00\x0b") + [
    "\u2028", "\u0085", "\xa0", "\u202e"]
_KEYS = ["label", "kernel_args", "order", "default", "pxe", "entry", "once", "mac", "x"]


def _value(fdp: Any, depth: int = 0) -> Any:
    """A JSON value of a fuzzed type (the C JSON parser gives the fuzzer no coverage, so
    structure is built here and only a quarter of bodies are raw bytes)."""
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 100))
    if kind == 5:  # mostly allowed characters, with the specials a script must never get
        return "".join(_ALPHABET[fdp.ConsumeIntInRange(0, len(_ALPHABET) - 1)]
                       for _ in range(fdp.ConsumeIntInRange(0, 40)))
    if kind == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {_KEYS[fdp.ConsumeIntInRange(0, len(_KEYS) - 1)]: _value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 3))}


def _body(fdp: Any) -> bytes:
    if fdp.ConsumeIntInRange(0, 3) == 0:
        return bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    body: dict[str, Any] = {}
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        body[_KEYS[fdp.ConsumeIntInRange(0, len(_KEYS) - 1)]] = _value(fdp)
    try:
        return json.dumps(body).encode()
    except (ValueError, OverflowError):  # NaN is fine for dumps; huge ints are not
        return b"{}"


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    route = fdp.ConsumeIntInRange(0, 3)
    if route == 3:
        args: dict[bytes, list[bytes]] = {}
        for name in (b"mac", b"after", b"wait", b"limit"):
            if fdp.ConsumeBool():
                args[name] = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))]
        try:
            query = api.events_query(_Request(b"", args))  # type: ignore[arg-type]
        except api.BadRequestError:
            return
        if not (query.after >= 0 and 0 <= query.wait <= api.MAX_WAIT and query.limit > 0):
            raise AssertionError(f"events query out of range: {query!r}")
        return
    body = _body(fdp)
    try:
        parsed: dict[str, Any] = api.read_json(_Request(body, {}))  # type: ignore[arg-type]
        if route == 0:
            changes = api.menu_changes(parsed)
            if "label" in changes:
                _safe(changes["label"], "label")
            if "kernel_args" in changes:
                _args_safe(changes["kernel_args"])
            if "order" in changes and changes["order"] is not None:
                assert isinstance(changes["order"], int) and not isinstance(
                    changes["order"], bool)
        elif route == 1:
            entry, once = api.assignment(parsed)
            assert entry is None or isinstance(entry, str)
            assert isinstance(once, bool)
        else:
            for value in parsed.values():
                if isinstance(value, str):
                    _safe(script_text(value), "script_text")
                    _args_safe(value)
            api.mac_or_none(str(parsed.get("mac", "")))
    except api.BadRequestError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

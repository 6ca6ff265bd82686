"""TFTP wire format (RFC 1350, options per RFC 2347): bytes in, values out, and back.

Knows nothing of sockets or Twisted. Every malformed datagram raises
:class:`TftpPacketError`, the only exception :func:`parse` lets out.
"""

from __future__ import annotations

import struct
from functools import partial

from attrs import field, frozen

RRQ = 1
WRQ = 2
DATA = 3
ACK = 4
ERROR = 5
OACK = 6

# Error codes (RFC 1350, 2347)
ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_DISK_FULL = 3
ERR_ILLEGAL = 4
ERR_UNKNOWN_TID = 5
ERR_EXISTS = 6
ERR_NO_USER = 7
ERR_OPTIONS = 8

#: Longest filename or option text we accept (real names are far shorter).
MAX_FIELD = 512

_HEADER = struct.Struct("!HH")


class TftpPacketError(ValueError):
    """A datagram that is not a well-formed TFTP packet."""


@frozen
class Request:
    """RRQ or WRQ.

    :ivar filename: decoded as latin-1 (lossless; names are netascii in theory).
    :ivar mode: lower-cased (``octet``, ``netascii``, ``mail``).
    :ivar options: lower-cased option names -> values, first occurrence wins.
    """

    opcode: int
    filename: str
    mode: str
    options: dict[str, str] = field(factory=dict, hash=False)


@frozen
class Data:
    block: int
    payload: bytes


@frozen
class Ack:
    block: int


@frozen
class Error:
    code: int
    message: str


@frozen
class OAck:
    options: dict[str, str] = field(factory=dict, hash=False)


Packet = Request | Data | Ack | Error | OAck


def _strings(body: bytes) -> list[str]:
    """Split NUL-terminated fields; the last one must be terminated."""
    if not body.endswith(b"\0"):
        raise TftpPacketError("field not NUL-terminated")
    parts = body[:-1].split(b"\0")
    for part in parts:
        if len(part) > MAX_FIELD:
            raise TftpPacketError("field too long")
    return [part.decode("latin-1") for part in parts]


def _options(fields: list[str]) -> dict[str, str]:
    if len(fields) % 2:
        raise TftpPacketError("option without a value")
    options: dict[str, str] = {}
    for i in range(0, len(fields), 2):
        name = fields[i].lower()
        if not name:
            raise TftpPacketError("empty option name")
        options.setdefault(name, fields[i + 1])
    return options


def parse(data: bytes) -> Packet:
    """Decode one datagram.

    :raises TftpPacketError: for anything malformed.
    """
    if len(data) < 4:
        raise TftpPacketError("datagram too short")
    opcode = (data[0] << 8) | data[1]
    if opcode in (RRQ, WRQ):
        fields = _strings(data[2:])
        if len(fields) < 2:
            raise TftpPacketError("request without mode")
        filename, mode = fields[0], fields[1].lower()
        if not filename:
            raise TftpPacketError("empty filename")
        return Request(opcode, filename, mode, _options(fields[2:]))
    if opcode == DATA:
        return Data((data[2] << 8) | data[3], data[4:])
    if opcode == ACK:
        if len(data) != 4:
            raise TftpPacketError("ACK of wrong length")
        return Ack((data[2] << 8) | data[3])
    if opcode == ERROR:
        code = (data[2] << 8) | data[3]
        body = data[4:]
        message = body[:-1] if body.endswith(b"\0") else body
        return Error(code, message[:MAX_FIELD].decode("latin-1"))
    if opcode == OACK:
        return OAck(_options(_strings(data[2:])))
    raise TftpPacketError(f"unknown opcode {opcode}")


def encode_request(opcode: int, filename: str, mode: str = "octet",
                   options: dict[str, str] | None = None) -> bytes:
    """An RRQ or WRQ (used by tests and benchmarks as a client)."""
    parts = [filename, mode]
    for name, value in (options or {}).items():
        parts += [name, value]
    return struct.pack("!H", opcode) + b"".join(p.encode("latin-1") + b"\0" for p in parts)


def encode_data(block: int, payload: bytes) -> bytes:
    """A DATA packet; ``block`` is taken modulo 65536 (rollover)."""
    return _HEADER.pack(DATA, block & 0xFFFF) + payload


#: The 4-byte header of DATA block ``block16`` (0..65535); the session's per-block call.
data_header = partial(_HEADER.pack, DATA)


def encode_ack(block: int) -> bytes:
    return _HEADER.pack(ACK, block & 0xFFFF)


def encode_error(code: int, message: str) -> bytes:
    return _HEADER.pack(ERROR, code) + message.encode("latin-1", "replace") + b"\0"


def encode_oack(options: dict[str, str]) -> bytes:
    body = b"".join(
        name.encode("latin-1") + b"\0" + value.encode("latin-1") + b"\0"
        for name, value in options.items()
    )
    return struct.pack("!H", OACK) + body


def describe(message: Packet) -> str:
    """A one-line summary of a decoded packet, for debug logs (names and texts in repr)."""
    if isinstance(message, Request):
        kind = "RRQ" if message.opcode == RRQ else "WRQ"
        options = "".join(f" {k}={v!r}" for k, v in message.options.items())
        return f"{kind} {message.filename!r} {message.mode!r}{options}"
    if isinstance(message, OAck):
        return "OACK" + "".join(f" {k}={v}" for k, v in message.options.items())
    if isinstance(message, Error):
        return f"ERROR {message.code} {message.message!r}"
    if isinstance(message, Data):
        return f"DATA {message.block} ({len(message.payload)} bytes)"
    return f"ACK {message.block}"


def describe_datagram(data: bytes) -> str:
    """:func:`describe` of a datagram as it is on the wire, or why it is not a packet.

    Meant to be called only when a debug line is written (``{summary()}`` in a
    ``twisted.logger`` format with a :func:`functools.partial`), so the hot path pays
    nothing for it."""
    try:
        return describe(parse(data))
    except TftpPacketError as e:
        return f"malformed ({len(data)} bytes: {e})"

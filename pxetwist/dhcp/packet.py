"""BOOTP/DHCP wire format (RFC 951, 2131, 2132): bytes in, values out, and back.

Knows nothing of sockets or Twisted. Options keep their order and their raw
bytes (option 82 and unknown options are echoed or ignored untouched);
meaning is given to them by :mod:`pxetwist.dhcp.options`. Option overload
(option 52) is read: options carried in ``file`` and ``sname`` are merged in,
and those fields then read as empty. Every malformed datagram raises
:class:`DhcpPacketError`, the only exception :func:`parse` lets out.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address

from attrs import field, frozen

BOOTREQUEST = 1
BOOTREPLY = 2
MAGIC = b"\x63\x82\x53\x63"
#: Replies are padded to the BOOTP minimum some firmware insists on.
MIN_LENGTH = 300
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
BROADCAST_FLAG = 0x8000

OPT_PAD = 0
OPT_END = 255
OPT_OVERLOAD = 52

ZERO = IPv4Address("0.0.0.0")


def peek_message_type(data: bytes) -> int | None:
    """Option 53 (the message type) of a datagram, read where it is found without
    decoding the rest; ``None`` if the datagram is not a BOOTREQUEST with a DHCP magic
    cookie, or the option is not in the options field before the first END.

    Lets a server under overload decide to queue or drop a DISCOVER for the price of a
    few byte reads: :func:`parse` of the same datagram costs ~40 times that (13.6 µs
    against 0.35 µs for an iPXE DISCOVER, measured with ``timeit``). The datagram is
    parsed in full before it is answered.
    """
    if len(data) < 241 or data[0] != 1 or data[236:240] != MAGIC:
        return None
    index, end = 240, len(data)
    while index < end:
        code = data[index]
        if code == OPT_PAD:
            index += 1
            continue
        if code == OPT_END or index + 1 >= end:
            return None
        length = data[index + 1]
        if code == 53:
            return data[index + 2] if length == 1 and index + 2 < end else None
        index += 2 + length
    return None


class DhcpPacketError(ValueError):
    """A datagram that is not a well-formed BOOTP/DHCP message."""


def _as_options(value: Iterable[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    return tuple(value)


@frozen
class DhcpPacket:
    """One BOOTP/DHCP message.

    :ivar chaddr: the 16-byte hardware address field as sent.
    :ivar options: ``(code, value)`` pairs in wire order; a code split across several
        occurrences (RFC 3396) is joined into one.
    """

    op: int
    xid: int
    chaddr: bytes
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""
    file: bytes = b""
    options: tuple[tuple[int, bytes], ...] = field(default=(), converter=_as_options)

    @property
    def mac(self) -> str:
        """``aa:bb:cc:dd:ee:ff`` for Ethernet, else the hardware address in hex pairs."""
        length = self.hlen if 0 < self.hlen <= 16 else 6
        return self.chaddr[:length].hex(":")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    def option(self, code: int) -> bytes | None:
        """The value of option ``code``, or ``None`` if absent."""
        for number, value in self.options:
            if number == code:
                return value
        return None


def walk_options(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(code, value)`` of each option in ``data`` from ``start``, in wire order, until
    END or the end of ``data`` (PAD skipped). :raises DhcpPacketError: for an option cut
    short."""
    i = start
    end = len(data)
    while i < end:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return
        if i + 1 >= end:
            raise DhcpPacketError("option without length")
        length = data[i + 1]
        value = data[i + 2:i + 2 + length]
        if len(value) != length:
            raise DhcpPacketError(f"option {code} runs past the end")
        yield code, value
        i += 2 + length


def _read_options(data: bytes, into: dict[int, bytearray], order: list[int]) -> None:
    for code, value in walk_options(data):
        if code not in into:
            into[code] = bytearray()
            order.append(code)
        into[code] += value


def _cstring(field_bytes: bytes) -> bytes:
    return field_bytes.split(b"\0", 1)[0]


def _address(packed: bytes) -> IPv4Address:
    """The address of four bytes; :data:`ZERO` itself for the zeros most requests carry
    (no new object for them)."""
    return ZERO if packed == _ZERO_BYTES else IPv4Address(packed)


_ZERO_BYTES = bytes(4)


def parse(data: bytes) -> DhcpPacket:
    """Decode one datagram. :raises DhcpPacketError: for anything malformed."""
    if len(data) < HEADER.size + 4:
        raise DhcpPacketError("datagram too short")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpPacketError(f"bad op {op}")
    if hlen > 16:
        raise DhcpPacketError(f"bad hardware address length {hlen}")
    if data[HEADER.size:HEADER.size + 4] != MAGIC:
        raise DhcpPacketError("no DHCP magic cookie")
    values: dict[int, bytearray] = {}
    order: list[int] = []
    _read_options(data[HEADER.size + 4:], values, order)
    overload = bytes(values.get(OPT_OVERLOAD, b""))
    if overload:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise DhcpPacketError("bad option overload")
        if overload[0] & 1:
            _read_options(file, values, order)
            file = b""
        if overload[0] & 2:
            _read_options(sname, values, order)
            sname = b""
    return DhcpPacket(
        op=op, xid=xid, chaddr=chaddr, htype=htype, hlen=hlen, hops=hops, secs=secs,
        flags=flags, ciaddr=_address(ciaddr), yiaddr=_address(yiaddr),
        siaddr=_address(siaddr), giaddr=_address(giaddr), sname=_cstring(sname),
        file=_cstring(file),
        options=tuple((code, bytes(values[code])) for code in order if code != OPT_OVERLOAD),
    )


def encode(packet: DhcpPacket) -> bytes:
    """The message as bytes: options in order (long values split per RFC 3396), END, and
    padding to :data:`MIN_LENGTH`."""
    if len(packet.sname) > 63 or len(packet.file) > 127:
        raise DhcpPacketError("sname or file too long")
    header = HEADER.pack(
        packet.op, packet.htype, packet.hlen, packet.hops, packet.xid & 0xFFFFFFFF,
        packet.secs, packet.flags, packet.ciaddr.packed, packet.yiaddr.packed,
        packet.siaddr.packed, packet.giaddr.packed, packet.chaddr.ljust(16, b"\0")[:16],
        packet.sname.ljust(64, b"\0"), packet.file.ljust(128, b"\0"),
    )
    parts = [header, MAGIC]
    for code, value in packet.options:
        if not value:
            parts.append(bytes((code, 0)))
        for start in range(0, len(value), 255):
            chunk = value[start:start + 255]
            parts.append(bytes((code, len(chunk))) + chunk)
    parts.append(bytes((OPT_END,)))
    data = b"".join(parts)
    return data.ljust(MIN_LENGTH, b"\0")

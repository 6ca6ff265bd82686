"""DHCPv6 wire format (RFC 8415) and the option bodies pxetwist reads or writes.

Bytes in, values out, no sockets. A client/server message is :class:`Message6`
(type, 24-bit transaction id, options); a relay message (Relay-Forw, Relay-Repl)
is :class:`Relay6`, which holds the message it carries (option 9), decoded,
itself possibly a relay message (nested relays, at most :data:`HOP_LIMIT` deep).
Everything malformed raises :class:`Dhcp6PacketError`, nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from ipaddress import IPv6Address

from attrs import frozen

# Message types (RFC 8415 section 7.3).
SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY = 1, 2, 3, 4, 5, 6, 7
RELEASE, DECLINE, RECONFIGURE, INFORMATION_REQUEST = 8, 9, 10, 11
RELAY_FORW, RELAY_REPL = 12, 13

MESSAGE_NAMES: dict[int, str] = {
    SOLICIT: "Solicit", ADVERTISE: "Advertise", REQUEST: "Request", CONFIRM: "Confirm",
    RENEW: "Renew", REBIND: "Rebind", REPLY: "Reply", RELEASE: "Release",
    DECLINE: "Decline", RECONFIGURE: "Reconfigure",
    INFORMATION_REQUEST: "Information-Request", RELAY_FORW: "Relay-Forw",
    RELAY_REPL: "Relay-Repl",
}

# Options (RFC 8415 section 21, RFC 3646, RFC 5970, RFC 6939).
CLIENTID, SERVERID, IA_NA, IA_TA, IAADDR, ORO, PREFERENCE, ELAPSED_TIME = 1, 2, 3, 4, 5, 6, 7, 8
RELAY_MSG, STATUS_CODE, RAPID_COMMIT, USER_CLASS, VENDOR_CLASS = 9, 13, 14, 15, 16
INTERFACE_ID, DNS_SERVERS, DOMAIN_LIST = 18, 23, 24
BOOTFILE_URL, BOOTFILE_PARAM, CLIENT_ARCH, NII, CLIENT_LINKLAYER = 59, 60, 61, 62, 79

# Status codes (RFC 8415 section 21.13).
SUCCESS, UNSPEC_FAIL, NO_ADDRS_AVAIL, NO_BINDING, NOT_ON_LINK = 0, 1, 2, 3, 4

#: Relay messages nest at most this deep (RFC 8415 HOP_COUNT_LIMIT is 8; we allow more).
HOP_LIMIT = 32
#: The PXE enterprise number (Intel) used in vendor class 16 by PXE and HTTP clients.
ENTERPRISE_PXE = 343

Options = tuple[tuple[int, bytes], ...]


class Dhcp6PacketError(ValueError):
    """The bytes are not a DHCPv6 message (or an option body is malformed)."""


@frozen
class Message6:
    """A client/server message.

    :ivar xid: the transaction id (24 bits).
    :ivar options: ``(code, body)`` pairs in wire order; a code may repeat (IA_NA).
    """

    msg_type: int
    xid: int
    options: Options = ()

    def option(self, code: int) -> bytes | None:
        """The body of the first option ``code``, or ``None``."""
        return next((body for c, body in self.options if c == code), None)

    def all(self, code: int) -> list[bytes]:
        return [body for c, body in self.options if c == code]


@frozen
class Relay6:
    """A Relay-Forw or Relay-Repl message and the message it relays.

    :ivar options: its options other than Relay Message (9): Interface-Id, option 79...
    """

    msg_type: int
    hop_count: int
    link: IPv6Address
    peer: IPv6Address
    message: Message6 | Relay6
    options: Options = ()

    def option(self, code: int) -> bytes | None:
        return next((body for c, body in self.options if c == code), None)


Packet = Message6 | Relay6


def parse_options(data: bytes) -> Options:
    """``(code, body)`` pairs of an option area. :raises Dhcp6PacketError:"""
    out = []
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            raise Dhcp6PacketError("truncated option header")
        code, length = struct.unpack_from("!HH", data, at)
        at += 4
        if at + length > len(data):
            raise Dhcp6PacketError(f"option {code} runs past the end")
        out.append((code, data[at:at + length]))
        at += length
    return tuple(out)


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    parts = []
    for code, body in options:
        if len(body) > 0xFFFF:
            raise Dhcp6PacketError(f"option {code} too long")
        parts.append(struct.pack("!HH", code, len(body)) + body)
    return b"".join(parts)


def parse(data: bytes, depth: int = 0) -> Packet:
    """Decode one datagram. :raises Dhcp6PacketError: for anything malformed."""
    if len(data) < 4:
        raise Dhcp6PacketError("shorter than a DHCPv6 header")
    kind = data[0]
    if kind not in (RELAY_FORW, RELAY_REPL):
        if kind not in MESSAGE_NAMES:
            raise Dhcp6PacketError(f"unknown message type {kind}")
        return Message6(kind, int.from_bytes(data[1:4], "big"), parse_options(data[4:]))
    if depth >= HOP_LIMIT:
        raise Dhcp6PacketError("relay messages nested too deep")
    if len(data) < 34:
        raise Dhcp6PacketError("shorter than a relay header")
    options = parse_options(data[34:])
    inner = [body for code, body in options if code == RELAY_MSG]
    if len(inner) != 1:
        raise Dhcp6PacketError("a relay message needs exactly one Relay Message option")
    return Relay6(kind, data[1], IPv6Address(data[2:18]), IPv6Address(data[18:34]),
                  parse(inner[0], depth + 1),
                  tuple((c, b) for c, b in options if c != RELAY_MSG))


def encode(packet: Packet) -> bytes:
    """The datagram for a message."""
    if isinstance(packet, Relay6):
        return (bytes((packet.msg_type, packet.hop_count)) + packet.link.packed
                + packet.peer.packed
                + encode_options(((RELAY_MSG, encode(packet.message)), *packet.options)))
    return (bytes((packet.msg_type,)) + (packet.xid & 0xFFFFFF).to_bytes(3, "big")
            + encode_options(packet.options))


# -- option bodies -------------------------------------------------------------------

@frozen
class Duid:
    """A DUID (RFC 8415 section 11) and what it says about the machine.

    :ivar raw: the bytes, as the client sent them.
    :ivar mac: the link-layer address of a DUID-LL/LLT on Ethernet, else ``""``.
    :ivar uuid: the 16 bytes of a DUID-UUID (type 4) as hex, else ``""``.
    """

    raw: bytes
    kind: int
    mac: str = ""
    uuid: str = ""


def mac_text(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def parse_duid(data: bytes) -> Duid:
    """:raises Dhcp6PacketError: for a DUID shorter than its type needs."""
    if len(data) < 2 or len(data) > 130:
        raise Dhcp6PacketError("a DUID is 2..130 bytes")
    kind = int.from_bytes(data[:2], "big")
    if kind == 1:  # DUID-LLT: hardware type, time, address
        if len(data) < 8:
            raise Dhcp6PacketError("DUID-LLT too short")
        hw, address = int.from_bytes(data[2:4], "big"), data[8:]
    elif kind == 3:  # DUID-LL
        if len(data) < 4:
            raise Dhcp6PacketError("DUID-LL too short")
        hw, address = int.from_bytes(data[2:4], "big"), data[4:]
    elif kind == 4:
        if len(data) != 18:
            raise Dhcp6PacketError("DUID-UUID is 18 bytes")
        return Duid(data, kind, uuid=data[2:].hex())
    else:
        return Duid(data, kind)
    mac = mac_text(address) if hw == 1 and len(address) == 6 else ""
    return Duid(data, kind, mac=mac)


def duid_ll(mac: bytes) -> bytes:
    """A DUID-LL for an Ethernet address."""
    return struct.pack("!HH", 3, 1) + mac


def link_layer_mac(body: bytes) -> str:
    """The Ethernet MAC in option 79 (RFC 6939), or ``""``."""
    if len(body) == 8 and body[:2] == b"\x00\x01":
        return mac_text(body[2:])
    return ""


def eui64_mac(address: IPv6Address) -> str:
    """The MAC a link-local EUI-64 address (``fe80::xxff:fexx:xxxx``) was made from, or
    ``""`` for any other address."""
    if not address.is_link_local:
        return ""
    iid = address.packed[8:]
    if iid[3:5] != b"\xff\xfe":
        return ""
    return mac_text(bytes((iid[0] ^ 0x02,)) + iid[1:3] + iid[5:])


@frozen
class IaAddress:
    address: IPv6Address
    preferred: int
    valid: int
    options: Options = ()


@frozen
class IaNa:
    """An IA_NA (RFC 8415 section 21.4) with the addresses it holds."""

    iaid: int
    t1: int
    t2: int
    addresses: tuple[IaAddress, ...] = ()
    options: Options = ()  # other than IAADDR (a status code)


def parse_ia_na(body: bytes) -> IaNa:
    if len(body) < 12:
        raise Dhcp6PacketError("IA_NA shorter than 12 bytes")
    iaid, t1, t2 = struct.unpack_from("!III", body)
    addresses = []
    others = []
    for code, value in parse_options(body[12:]):
        if code == IAADDR:
            if len(value) < 24:
                raise Dhcp6PacketError("IAADDR shorter than 24 bytes")
            pref, valid = struct.unpack_from("!II", value, 16)
            addresses.append(IaAddress(IPv6Address(value[:16]), pref, valid,
                                       parse_options(value[24:])))
        else:
            others.append((code, value))
    return IaNa(iaid, t1, t2, tuple(addresses), tuple(others))


def encode_ia_na(ia: IaNa) -> bytes:
    inner = [(IAADDR, a.address.packed + struct.pack("!II", a.preferred, a.valid)
              + encode_options(a.options)) for a in ia.addresses]
    return struct.pack("!III", ia.iaid, ia.t1, ia.t2) + encode_options([*inner, *ia.options])


def status(code: int, message: str = "") -> tuple[int, bytes]:
    """A Status Code option."""
    return STATUS_CODE, code.to_bytes(2, "big") + message.encode("utf-8")


def parse_u16_list(body: bytes) -> tuple[int, ...]:
    """Option Request (6) or Client Architecture (61): 16-bit codes."""
    if len(body) % 2:
        raise Dhcp6PacketError("odd length for a list of 16-bit codes")
    return struct.unpack(f"!{len(body) // 2}H", body)


def parse_opaque_list(body: bytes) -> tuple[bytes, ...]:
    """User class data (15) or the data of a vendor class (16): 16-bit length-prefixed."""
    out = []
    at = 0
    while at < len(body):
        if at + 2 > len(body):
            raise Dhcp6PacketError("truncated opaque-data length")
        length = int.from_bytes(body[at:at + 2], "big")
        at += 2
        if at + length > len(body):
            raise Dhcp6PacketError("opaque data runs past the end")
        out.append(body[at:at + length])
        at += length
    return tuple(out)


def encode_opaque_list(items: Sequence[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(2, "big") + item for item in items)


def parse_vendor_class(body: bytes) -> tuple[int, tuple[bytes, ...]]:
    """Enterprise number and data items of option 16."""
    if len(body) < 4:
        raise Dhcp6PacketError("vendor class shorter than its enterprise number")
    return int.from_bytes(body[:4], "big"), parse_opaque_list(body[4:])


def vendor_class(enterprise: int, *items: bytes) -> tuple[int, bytes]:
    return VENDOR_CLASS, enterprise.to_bytes(4, "big") + encode_opaque_list(items)

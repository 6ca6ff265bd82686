"""The DHCPv6 codec: round trips, option bodies, and garbage that must only raise
Dhcp6PacketError."""

from __future__ import annotations

import contextlib
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxetwist.dhcp6 import packet as p6
from pxetwist.dhcp6.packet import Dhcp6PacketError, IaAddress, IaNa, Message6, Relay6
from tests.dhcp6.clients import LINK_LOCAL, ovmf


def test_message_round_trip() -> None:
    """A message encodes and parses back to itself, options in order and repeated."""
    message = ovmf(p6.SOLICIT, (p6.IA_NA, b"\0" * 12), (p6.IA_NA, b"\1" * 12))
    assert p6.parse(p6.encode(message)) == message
    assert len(message.all(p6.IA_NA)) == 2


def test_nested_relay_round_trip() -> None:
    """Relay-Forw inside Relay-Forw: the inner message is decoded, options kept."""
    inner = Relay6(p6.RELAY_FORW, 0, IPv6Address("fd00::1"), IPv6Address(LINK_LOCAL),
                   ovmf(p6.SOLICIT), ((p6.CLIENT_LINKLAYER, b"\0\1" + bytes(6)),))
    outer = Relay6(p6.RELAY_FORW, 1, IPv6Address("fd01::1"), IPv6Address("fd00::1"), inner,
                   ((p6.INTERFACE_ID, b"eth7"),))
    assert p6.parse(p6.encode(outer)) == outer


def test_ia_na_round_trip() -> None:
    """IA_NA with an address and a status code."""
    ia = IaNa(7, 100, 160, (IaAddress(IPv6Address("fd77::10"), 200, 300),),
              (p6.status(p6.SUCCESS, "ok"),))
    assert p6.parse_ia_na(p6.encode_ia_na(ia)) == ia


@pytest.mark.parametrize(("duid", "mac", "uuid"), [
    (bytes.fromhex("000100010000000152540012 3456".replace(" ", "")), "52:54:00:12:34:56", ""),
    (bytes.fromhex("00030001a0b1c2d3e4f5"), "a0:b1:c2:d3:e4:f5", ""),
    (bytes.fromhex("0004") + bytes(range(16)), "", bytes(range(16)).hex()),
    (bytes.fromhex("0002000001370102"), "", ""),
    (bytes.fromhex("00030020") + bytes(20), "", ""),  # InfiniBand: no Ethernet MAC
])
def test_duid_kinds(duid: bytes, mac: str, uuid: str) -> None:
    """DUID-LLT and DUID-LL give the MAC (Ethernet only), DUID-UUID the UUID."""
    parsed = p6.parse_duid(duid)
    assert (parsed.mac, parsed.uuid) == (mac, uuid)


@pytest.mark.parametrize(("address", "mac"), [
    (LINK_LOCAL, "52:54:00:12:34:56"),
    ("fe80::200:5eff:fe00:5301", "00:00:5e:00:53:01"),
    ("fe80::1", ""),                       # not EUI-64
    ("fd77::5054:ff:fe12:3456", ""),       # not link-local
])
def test_eui64_mac(address: str, mac: str) -> None:
    """The MAC inside a link-local EUI-64 address (U/L bit flipped back)."""
    assert p6.eui64_mac(IPv6Address(address)) == mac


def test_too_deep_relay_nesting_is_refused() -> None:
    """Relays nested past the hop limit are malformed, not a recursion error."""
    data = p6.encode(Message6(p6.SOLICIT, 1))
    for _ in range(p6.HOP_LIMIT + 1):
        data = bytes((p6.RELAY_FORW, 0)) + bytes(32) + p6.encode_options([(p6.RELAY_MSG, data)])
    with pytest.raises(Dhcp6PacketError):
        p6.parse(data)


@pytest.mark.parametrize("data", [
    b"", b"\x01", b"\x01\0\0", b"\x63\0\0\0",  # short, unknown type
    b"\x01\0\0\1\0\1\0\5ab",                  # option runs past the end
    b"\x01\0\0\1\0\1\0",                       # truncated option header
    bytes((p6.RELAY_FORW,)) + bytes(20),       # short relay header
    bytes((p6.RELAY_FORW, 0)) + bytes(32),     # relay without a relayed message
])
def test_garbage_examples(data: bytes) -> None:
    """Truncated, unknown and inconsistent datagrams raise Dhcp6PacketError."""
    with pytest.raises(Dhcp6PacketError):
        p6.parse(data)


def _option_bodies(packet: p6.Packet) -> None:
    """Every option body parser over every option, as the controller may call them."""
    while isinstance(packet, Relay6):
        p6.link_layer_mac(packet.option(p6.CLIENT_LINKLAYER) or b"")
        packet = packet.message
    parsers = {p6.CLIENTID: p6.parse_duid, p6.IA_NA: p6.parse_ia_na,
               p6.ORO: p6.parse_u16_list, p6.CLIENT_ARCH: p6.parse_u16_list,
               p6.USER_CLASS: p6.parse_opaque_list, p6.VENDOR_CLASS: p6.parse_vendor_class}
    for code, body in packet.options:
        if code in parsers:
            with contextlib.suppress(Dhcp6PacketError):
                parsers[code](body)


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_packet_errors(data: bytes) -> None:
    """Random datagrams: a packet or Dhcp6PacketError, from parse and every body parser."""
    try:
        packet = p6.parse(data)
    except Dhcp6PacketError:
        return
    _option_bodies(packet)


@given(st.lists(st.tuples(st.sampled_from([1, 3, 6, 15, 16, 61, 79, 9, 5]),
                          st.binary(max_size=40)), max_size=8),
       st.sampled_from([p6.SOLICIT, p6.REQUEST, p6.RELAY_FORW]))
def test_structured_garbage(options: list[tuple[int, bytes]], kind: int) -> None:
    """Well-framed messages with garbage option bodies: only Dhcp6PacketError."""
    if kind == p6.RELAY_FORW:
        data = bytes((kind, 0)) + bytes(32) + p6.encode_options(options)
    else:
        data = bytes((kind, 0, 0, 1)) + p6.encode_options(options)
    try:
        packet = p6.parse(data)
    except Dhcp6PacketError:
        return
    _option_bodies(packet)

"""The DHCP codec: round trips, overload, RFC 3396 long options, garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import (
    MIN_LENGTH,
    DhcpPacket,
    DhcpPacketError,
    encode,
    parse,
    peek_message_type,
)
from tests.dhcp.clients import MAC, UUID_RAW, ipxe_rom, ovmf


def test_ipxe_discover_round_trips_and_reads_its_facts() -> None:
    """An iPXE ROM DISCOVER survives encode/parse and its facts read right."""
    packet = parse(encode(ipxe_rom(opt.DISCOVER)))
    assert packet.mac == MAC
    assert opt.message_type(packet) == opt.DISCOVER
    assert opt.client_arch(packet) == 0
    assert opt.is_ipxe(packet) and opt.user_classes(packet) == ["iPXE"]
    assert opt.vendor_class(packet) == "PXEClient:Arch:00000:UNDI:002001"
    assert opt.client_key(packet) == "mac:" + MAC  # 61 = 01 + MAC is the MAC itself
    import uuid

    assert opt.machine_uuid(packet) == str(uuid.UUID(bytes_le=UUID_RAW))


def test_ovmf_is_not_ipxe() -> None:
    """OVMF's client: arch 7, no 77/175, broadcast flag, keyed by MAC."""
    packet = parse(encode(ovmf(opt.DISCOVER)))
    assert opt.client_arch(packet) == 7 and not opt.is_ipxe(packet)
    assert packet.broadcast and opt.client_key(packet) == "mac:" + MAC


def test_other_client_ids_are_their_own_key() -> None:
    """A client id other than 01+MAC identifies the client by itself."""
    packet = DhcpPacket(op=1, xid=1, chaddr=bytes.fromhex("525400123456"),
                        options=[(opt.CLIENT_ID, b"\xffabc")])
    assert opt.client_key(packet) == "id:ff616263"


def test_rfc3004_user_class() -> None:
    """Option 77 in RFC 3004 form (length-prefixed entries) is read as a list."""
    packet = DhcpPacket(op=1, xid=1, chaddr=b"\x01" * 6,
                        options=[(opt.USER_CLASS, b"\x04iPXE\x03foo")])
    assert opt.user_classes(packet) == ["iPXE", "foo"] and opt.is_ipxe(packet)


def test_replies_are_padded_and_long_options_split() -> None:
    """Encoded messages are at least 300 bytes; a 600-byte option is split and rejoined."""
    packet = DhcpPacket(op=2, xid=1, chaddr=b"\x01" * 6, options=[(43, b"x" * 600)])
    data = encode(packet)
    assert len(encode(DhcpPacket(op=2, xid=1, chaddr=b""))) == MIN_LENGTH
    assert parse(data).option(43) == b"x" * 600


def test_option_overload_reads_file_and_sname() -> None:
    """Option 52 = 3: options in file and sname are merged; those fields read empty."""
    base = bytearray(encode(DhcpPacket(op=1, xid=5, chaddr=b"\x01" * 6,
                                       options=[(opt.MESSAGE_TYPE, b"\x01"), (52, b"\x03")])))
    base[108:108 + 6] = bytes([opt.HOSTNAME, 4]) + b"host"  # file field
    base[108 + 6] = 255
    base[44:44 + 5] = bytes([opt.DOMAIN, 3]) + b"lab"  # sname field
    base[44 + 5] = 255
    packet = parse(bytes(base))
    assert packet.option(opt.HOSTNAME) == b"host" and packet.option(opt.DOMAIN) == b"lab"
    assert packet.file == b"" and packet.sname == b""


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:200],  # truncated header
        lambda d: d[:236] + b"XXXX" + d[240:],  # bad magic
        lambda d: d[:240] + bytes([61, 50, 1]),  # option runs past the end
        lambda d: b"\x07" + d[1:],  # bad op
        lambda d: d[:2] + b"\x20" + d[3:],  # hlen 32
        lambda d: d[:240] + bytes([52, 1, 9, 255]),  # bad overload value
        lambda d: d[:240] + bytes([61]),  # option without length
    ],
)
def test_malformed_packets_raise_the_codec_error(mutate: object) -> None:
    """Each malformed message raises DhcpPacketError."""
    data = encode(ipxe_rom(opt.DISCOVER))
    with pytest.raises(DhcpPacketError):
        parse(mutate(data))  # type: ignore[operator]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_raises_the_codec_error(data: bytes) -> None:
    """Random bytes either parse or raise DhcpPacketError."""
    with contextlib.suppress(DhcpPacketError):
        parse(data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=240, max_size=700))
def test_garbage_after_a_valid_header_only_raises_the_codec_error(tail: bytes) -> None:
    """A valid header and cookie followed by random option bytes: codec error or a packet,
    which every option reader (and the debug summary) takes without raising."""
    head = encode(ipxe_rom(opt.DISCOVER))[:240]
    try:
        packet = parse(head + tail)
    except DhcpPacketError:
        return
    for helper in (opt.client_arch, opt.vendor_class, opt.user_classes, opt.is_ipxe,
                   opt.machine_uuid, opt.client_key, opt.requested_ip, opt.server_id,
                   opt.hostname, opt.message_type, opt.describe):
        helper(packet)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600) | st.binary(max_size=400).map(
    lambda tail: encode(ipxe_rom(opt.DISCOVER))[:240] + tail))
def test_peeking_at_the_type_of_garbage_never_raises(data: bytes) -> None:
    """Random bytes, alone or after a valid header: a type or ``None``, nothing raised;
    whenever it names a type, the datagram is a BOOTREQUEST with the DHCP cookie."""
    kind = peek_message_type(data)
    assert kind is None or (0 <= kind <= 255 and data[0] == 1 and data[236:240] == b"c\x82Sc")


OPTION = st.tuples(st.integers(1, 254).filter(lambda c: c not in (52, 53)),
                   st.binary(max_size=40))


@settings(max_examples=1000, deadline=None)
@given(st.lists(OPTION, max_size=8), st.integers(1, 8), st.integers(0, 8),
       st.sampled_from([0, 1, 2, 3]))
def test_peeked_type_is_the_parsed_type(options: list[tuple[int, bytes]], kind: int,
                                        position: int, pads: int) -> None:
    """Option 53 anywhere among other options (and pads), once: the peeked type is what
    the full decoding reads."""
    body = [bytes([code, len(value)]) + value for code, value in options]
    body.insert(min(position, len(body)), bytes([53, 1, kind]))
    data = encode(ipxe_rom(opt.DISCOVER))[:240] + b"\0" * pads + b"".join(body) + b"\xff"
    assert peek_message_type(data) == opt.message_type(parse(data)) == kind


def test_a_reply_or_a_type_past_the_end_is_not_peeked() -> None:
    data = encode(ipxe_rom(opt.DISCOVER))
    assert peek_message_type(data) == opt.DISCOVER
    assert peek_message_type(b"\x02" + data[1:]) is None  # a BOOTREPLY
    assert peek_message_type(data[:240] + b"\xff" + bytes([53, 1, 1])) is None
    assert peek_message_type(data[:240] + bytes([53, 1])) is None  # cut short

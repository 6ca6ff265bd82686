"""The TFTP codec: round trips, malformed input, garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.tftp import packet


def test_request_round_trip_with_options() -> None:
    """An RRQ with options decodes to name, lower-cased mode and option names."""
    data = packet.encode_request(packet.RRQ, "undionly.kpxe", "OCTET",
                                 {"BLKSIZE": "1432", "tsize": "0"})
    request = packet.parse(data)
    assert request == packet.Request(packet.RRQ, "undionly.kpxe", "octet",
                                     {"blksize": "1432", "tsize": "0"})


def test_other_packets_round_trip() -> None:
    """DATA, ACK, ERROR and OACK decode to what was encoded."""
    assert packet.parse(packet.encode_data(70000, b"abc")) == packet.Data(70000 & 0xFFFF, b"abc")
    assert packet.parse(packet.encode_ack(3)) == packet.Ack(3)
    assert packet.parse(packet.encode_error(8, "User aborted")) == packet.Error(8, "User aborted")
    assert packet.parse(packet.encode_oack({"tsize": "5"})) == packet.OAck({"tsize": "5"})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01",
        b"\x00\x01file",  # no NUL
        b"\x00\x01file\x00",  # no mode
        b"\x00\x01\x00octet\x00",  # empty name
        b"\x00\x01f\x00octet\x00blksize\x00",  # option without value
        b"\x00\x01f\x00octet\x00\x001\x00",  # empty option name
        b"\x00\x04\x00\x01\x00",  # ACK too long
        b"\x00\x09\x00\x01",  # unknown opcode
        b"\x00\x01" + b"a" * 600 + b"\x00octet\x00",  # name too long
    ],
)
def test_malformed_packets_raise_the_codec_error(data: bytes) -> None:
    """Each malformed datagram raises TftpPacketError and nothing else."""
    with pytest.raises(packet.TftpPacketError):
        packet.parse(data)


def test_duplicate_options_keep_the_first() -> None:
    """A repeated option keeps its first value."""
    data = b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x009000\x00"
    assert packet.parse(data).options == {"blksize": "512"}  # type: ignore[union-attr]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=700))
def test_garbage_only_raises_the_codec_error(data: bytes) -> None:
    """Random bytes either parse or raise TftpPacketError."""
    with contextlib.suppress(packet.TftpPacketError):
        packet.parse(data)


@settings(max_examples=500, deadline=None)
@given(st.text(min_size=1, max_size=100).filter(lambda s: "\0" not in s),
       st.dictionaries(st.sampled_from(["blksize", "tsize", "timeout", "windowsize"]),
                       st.text(max_size=10).filter(lambda s: "\0" not in s)))
def test_requests_round_trip(name: str, options: dict[str, str]) -> None:
    """Any NUL-free name and options survive encode and parse (latin-1 text)."""
    name = name.encode("latin-1", "replace").decode("latin-1")
    options = {k: v.encode("latin-1", "replace").decode("latin-1") for k, v in options.items()}
    parsed = packet.parse(packet.encode_request(packet.RRQ, name, "octet", options))
    assert parsed == packet.Request(packet.RRQ, name, "octet", options)

"""Who answered what, from a packet capture of a DHCP benchmark (``tcpdump -w``, Ethernet).

:func:`tally` reads the capture taken on the client's side of the segment, where every
request perfdhcp sent and every reply of every server passes, and counts per server
(option 54) the OFFERs, ACKs and NAKs; an ACK from a server other than the one the
client's REQUEST named in option 54 is counted as ``wrong_server``. From the ACKs alone it
finds the double allocations a database cannot show (its address column is a primary
key): an address ACKed to two MACs, a MAC ACKed two addresses.
"""

from __future__ import annotations

import struct
from collections import Counter, defaultdict
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacket, DhcpPacketError, parse

_GLOBAL_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_ETHERTYPE_IPV4 = 0x0800
_UDP = 17


def datagrams(path: Path) -> Iterator[bytes]:
    """The UDP payloads of the IPv4 packets in a little- or big-endian pcap file
    (truncated records and anything not Ethernet/IPv4/UDP are skipped)."""
    data = path.read_bytes()
    if len(data) < _GLOBAL_HEADER.size:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        record = _RECORD_HEADER
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        record = struct.Struct(">IIII")
    else:
        return
    offset = _GLOBAL_HEADER.size
    while offset + record.size <= len(data):
        _, _, captured, _ = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset:offset + captured]
        offset += captured
        payload = udp_payload(frame)
        if payload is not None:
            yield payload


def udp_payload(frame: bytes) -> bytes | None:
    """The UDP payload of an Ethernet frame carrying IPv4/UDP, else None."""
    if len(frame) < 14 + 20 + 8 or int.from_bytes(frame[12:14], "big") != _ETHERTYPE_IPV4:
        return None
    header_length = (frame[14] & 0x0F) * 4
    if header_length < 20 or frame[14 + 9] != _UDP:
        return None
    start = 14 + header_length + 8
    return frame[start:] if start <= len(frame) else None


def tally(packets: Iterator[bytes]) -> dict[str, Any]:
    """Counts per server identifier and the double allocations (see the module)."""
    sent: Counter[str] = Counter()
    replies: dict[str, Counter[str]] = defaultdict(Counter)
    chosen: dict[str, IPv4Address | None] = {}  # MAC -> option 54 of its REQUEST
    acked_to: dict[str, set[str]] = defaultdict(set)  # address -> MACs
    acked: dict[str, set[str]] = defaultdict(set)  # MAC -> addresses
    wrong_server = 0
    for payload in packets:
        try:
            packet: DhcpPacket = parse(payload)
        except DhcpPacketError:
            continue
        kind = opt.MESSAGE_NAMES.get(opt.message_type(packet) or 0, "other")
        if packet.op == BOOTREQUEST:
            sent[kind] += 1
            if kind == "REQUEST":
                chosen[packet.mac] = opt.server_id(packet)
            continue
        server = str(opt.server_id(packet))
        replies[server][kind] += 1
        if kind == "ACK":
            acked_to[str(packet.yiaddr)].add(packet.mac)
            acked[packet.mac].add(str(packet.yiaddr))
            named = chosen.get(packet.mac)
            if named is not None and str(named) != server:
                wrong_server += 1
    return {
        "sent": dict(sent),
        "replies": {server: dict(counts) for server, counts in sorted(replies.items())},
        "wrong_server": wrong_server,
        "address_doubles": sum(1 for macs in acked_to.values() if len(macs) > 1),
        "mac_doubles": sum(1 for ips in acked.values() if len(ips) > 1),
    }

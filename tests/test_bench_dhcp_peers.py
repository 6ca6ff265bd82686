"""The DHCP peers benchmark's own logic (bench/dhcp_peers_bench.py, bench/dhcp_capture.py):
the capture tally that finds double allocations, the metrics and configuration it reads and
writes. Nothing here runs a benchmark."""

from __future__ import annotations

import json
import struct
import sys
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREPLY, BOOTREQUEST, DhcpPacket, encode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import dhcp_capture
import dhcp_peers_bench

A, B = "10.78.0.1", "10.78.0.3"


def frame(packet: DhcpPacket) -> bytes:
    """``packet`` in Ethernet/IPv4/UDP, as tcpdump writes it (checksums left 0)."""
    payload = encode(packet)
    udp = struct.pack("!HHHH", 67, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes(4), bytes(4)) + udp
    return bytes(12) + b"\x08\x00" + ip


def pcap(frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for data in frames:
        out += struct.pack("<IIII", 0, 0, len(data), len(data)) + data
    return out


def message(kind: int, mac: int, server: str | None = None, yiaddr: str = "0.0.0.0"
            ) -> DhcpPacket:
    options = [(opt.MESSAGE_TYPE, bytes((kind,)))]
    if server is not None:
        options.append((opt.SERVER_ID, IPv4Address(server).packed))
    return DhcpPacket(op=BOOTREPLY if kind in (opt.OFFER, opt.ACK, opt.NAK) else BOOTREQUEST,
                      xid=mac, chaddr=bytes((2, 0, 0, 0, 0, mac)) + bytes(10),
                      yiaddr=IPv4Address(yiaddr), options=options)


def test_tally_counts_per_server_and_finds_doubles_and_wrong_servers(tmp_path: Path) -> None:
    """Replies are counted per option 54; an ACK from a server the REQUEST did not name,
    an address ACKed to two MACs and a MAC ACKed two addresses are each found."""
    frames = [frame(p) for p in (
        message(opt.DISCOVER, 1), message(opt.OFFER, 1, A, "10.78.1.1"),
        message(opt.REQUEST, 1, A), message(opt.ACK, 1, A, "10.78.1.1"),
        message(opt.DISCOVER, 2), message(opt.OFFER, 2, B, "10.78.1.1"),
        message(opt.REQUEST, 2, B), message(opt.ACK, 2, A, "10.78.1.1"),  # wrong, double
        message(opt.REQUEST, 3, B), message(opt.ACK, 3, B, "10.78.1.3"),
        message(opt.ACK, 3, B, "10.78.1.4"),  # MAC 3 given two addresses
    )]
    path = tmp_path / "client.pcap"
    path.write_bytes(pcap([*frames, b"\x00" * 20]))  # and a frame that is not IPv4/UDP
    tally = dhcp_capture.tally(dhcp_capture.datagrams(path))
    assert tally["sent"] == {"DISCOVER": 2, "REQUEST": 3}
    assert tally["replies"] == {A: {"OFFER": 1, "ACK": 2}, B: {"OFFER": 1, "ACK": 2}}
    assert tally["wrong_server"] == 1
    assert tally["address_doubles"] == 1
    assert tally["mac_doubles"] == 1


@given(st.binary(max_size=400))
def test_garbage_captures_are_read_without_raising(data: bytes) -> None:
    """A truncated or random capture yields what it can and raises nothing."""
    path = Path(f"/tmp/pxetwist-test-capture-{id(data)}.pcap")
    try:
        path.write_bytes(b"\xd4\xc3\xb2\xa1" + data)
        dhcp_capture.tally(dhcp_capture.datagrams(path))
        path.write_bytes(data)
        dhcp_capture.tally(dhcp_capture.datagrams(path))
    finally:
        path.unlink(missing_ok=True)


def test_metrics_are_read_by_kind() -> None:
    """pxetwist's DHCP counters come back as "what label" -> value; other lines are
    ignored."""
    text = ('# HELP x\npxetwist_dhcp_packets_total{type="DISCOVER"} 1499.0\n'
            'pxetwist_dhcp_replies_total{type="ACK"} 747.0\n'
            'pxetwist_dhcp_dropped_total{reason="peer-bucket"} 752.0\n'
            'pxetwist_dhcp_packets_created{type="DISCOVER"} 1.7e9\n')
    assert dhcp_peers_bench.parse_metrics(text) == {
        "packets DISCOVER": 1499.0, "replies ACK": 747.0, "dropped peer-bucket": 752.0}


def test_kea_gets_the_same_pool_and_lease_time_and_the_clusters_socket(
        tmp_path: Path) -> None:
    """Kea's configuration has pxetwist's pool, netmask and lease time, its leases in the
    named PostgreSQL database on the cluster's socket folder, multi-threading as asked."""
    config = dhcp_peers_bench.kea_config(tmp_path, "t1_2", "/tmp/pg/socket", threads=4)
    dhcp4 = json.loads(json.dumps(config))["Dhcp4"]
    assert dhcp4["valid-lifetime"] == 3600
    [subnet] = dhcp4["subnet4"]
    assert subnet["subnet"] == "10.78.0.0/16"
    assert subnet["pools"] == [{"pool": "10.78.1.0 - 10.78.254.254"}]
    assert dhcp4["lease-database"] == {"type": "postgresql", "name": "t1_2",
                                       "host": "/tmp/pg/socket", "user": "postgres"}
    assert dhcp4["multi-threading"]["enable-multi-threading"] is True
    assert dhcp_peers_bench.kea_config(tmp_path, "d", "/s")["Dhcp4"]["multi-threading"][
        "enable-multi-threading"] is False
    assert dhcp_peers_bench.database_name(
        "postgresql://postgres@/t1_2?host=/tmp/pg/socket") == "t1_2"

"""Starvation and amplification on the fake UDP reactor: 10,000 MACs against a small pool,
one MAC flooding, spoofed RRQs, and a flood of RRQs against ``max_sessions``."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.leases import OFFER_HOLD
from pxetwist.dhcp.replies import EXHAUSTED_LOG_INTERVAL, RATE_LIMIT
from pxetwist.tftp import packet
from pxetwist.tftp.core import PRE_ANSWER_RESENDS
from tests.dhcp.clients import ipxe_rom, plain, requested, server_id
from tests.dhcp.test_server import SERVER, dora
from tests.dhcp.test_server import make_rig as make_dhcp_rig
from tests.tftp.helpers import make_rig as make_tftp_rig

KNOWN = "52:54:00:12:34:56"
RESERVED = "52:54:00:00:00:aa"  # reserved 10.77.0.50 in tests/dhcp/test_server.make_rig


def flood_mac(i: int) -> str:
    return f"02:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}:00:01"


def test_ten_thousand_macs_cannot_starve_a_known_or_reserved_client(tmp_path: Path) -> None:
    """10,000 MACs run DORA against a 4-address pool: they get the 3 free addresses and
    nothing more; the client already holding a lease renews it, and a reserved MAC gets
    its reservation."""
    rig = make_dhcp_rig(tmp_path)
    known = dora(rig, mac=KNOWN)
    acked = 0
    for i in range(10_000):
        mac = flood_mac(i)
        replies = rig.send(plain(opt.DISCOVER, mac=mac))
        if replies:
            offer = replies[0][0]
            answer = rig.send(plain(opt.REQUEST, mac=mac, options=[
                server_id(SERVER), requested(str(offer.yiaddr))]))
            acked += sum(opt.message_type(p) == opt.ACK for p, _ in answer)
    assert acked == 3 and rig.service.leases_in_use() == 4
    again = dora(rig, mac=KNOWN)
    assert again.yiaddr == known.yiaddr
    reserved = dora(rig, mac=RESERVED)
    assert reserved.yiaddr == IPv4Address("10.77.0.50")


def test_pool_exhaustion_warns_once_a_minute_not_per_client(tmp_path: Path) -> None:
    """10,000 MACs finding the pool empty give one warning (with the count of the others
    at the next one), not 10,000 log lines."""
    from twisted.logger import Logger

    rig = make_dhcp_rig(tmp_path)
    logged: list[dict[str, object]] = []
    rig.service.main_controller._log = Logger(observer=logged.append)
    for i in range(4):
        dora(rig, mac=flood_mac(i))
    for i in range(10_000):
        rig.send(plain(opt.DISCOVER, mac=flood_mac(100 + i)))
    warnings = [e for e in logged if "exhausted" in str(e["log_format"])]
    assert len(warnings) == 1
    rig.reactor.advance(EXHAUSTED_LOG_INTERVAL)
    rig.send(plain(opt.DISCOVER, mac=flood_mac(99_999)))
    warnings = [e for e in logged if "exhausted" in str(e["log_format"])]
    assert len(warnings) == 2 and warnings[1]["more"] == 9_999


def test_discover_only_flood_holds_offers_for_a_minute_only(tmp_path: Path) -> None:
    """10,000 MACs that only DISCOVER tie up the pool's offers for OFFER_HOLD seconds; a
    newcomer is offered an address after that."""
    rig = make_dhcp_rig(tmp_path)
    offered = sum(len(rig.send(plain(opt.DISCOVER, mac=flood_mac(i)))) for i in range(10_000))
    assert offered == 4
    assert rig.send(ipxe_rom(opt.DISCOVER, mac=KNOWN)) == []
    rig.reactor.advance(OFFER_HOLD + 1)
    [(offer, _)] = rig.send(ipxe_rom(opt.DISCOVER, mac=KNOWN))
    assert opt.message_type(offer) == opt.OFFER


def test_one_mac_flooding_is_rate_limited_and_others_are_served(tmp_path: Path) -> None:
    """5,000 DISCOVERs from one MAC within a second get RATE_LIMIT answers; another MAC
    in the same second is answered."""
    rig = make_dhcp_rig(tmp_path)
    answered = sum(len(rig.send(ipxe_rom(opt.DISCOVER, mac=flood_mac(1))))
                   for _ in range(5_000))
    assert answered == RATE_LIMIT
    assert len(rig.send(ipxe_rom(opt.DISCOVER, mac=KNOWN))) == 1


def test_spoofed_rrqs_send_at_most_one_oack_or_window_each(tmp_path: Path) -> None:
    """1,000 spoofed RRQs (options or none) and no ACK ever: each gets one datagram, the
    OACK or the first 512-byte block, sent at most 1 + PRE_ANSWER_RESENDS times; then the
    session ends."""
    rig = make_tftp_rig(tmp_path, {"big": b"x" * 1_000_000}, max_sessions=2000,
                        max_sessions_per_client=2000)
    for i in range(1000):
        if i % 2:
            rig.rrq("big", ("203.0.113.7", 1024 + i), blksize=65464, windowsize=64, tsize=0)
        else:
            rig.rrq("big", ("203.0.113.7", 1024 + i))
    per_client: dict[tuple[str, int], list[bytes]] = {}
    for _ in range(200):
        for port in [p for n, p in rig.reactor.ports.items() if n != 69]:
            for data, addr in port.take():
                per_client.setdefault(addr, []).append(data)
        if len(rig.reactor.ports) == 1:
            break
        rig.reactor.advance(5)
    assert len(per_client) == 1000 and list(rig.reactor.ports) == [69]
    for sent in per_client.values():
        assert len(set(sent)) == 1 and len(sent) <= 1 + PRE_ANSWER_RESENDS
        first = packet.parse(sent[0])
        assert isinstance(first, packet.OAck) or (
            isinstance(first, packet.Data) and first.block == 1 and len(first.payload) == 512)
    assert rig.resolver.open_descriptors == 0


def test_max_sessions_holds_under_a_flood(tmp_path: Path) -> None:
    """3,000 RRQs from 3,000 hosts with max_sessions 50: 50 transfers, the rest refused
    'busy'; 500 from one host stop at max_sessions_per_client; once they time out a new
    client is served."""
    rig = make_tftp_rig(tmp_path, {"f": b"y" * 5000}, max_sessions=50,
                        max_sessions_per_client=8)
    for i in range(3000):
        rig.rrq("f", (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 2000))
        assert len(rig.server.sessions) <= 50
    refusals = [packet.parse(d) for d, _ in rig.listener.take()]
    assert len(rig.server.sessions) == 50 and len(rig.reactor.ports) == 51
    assert len(refusals) == 2950
    assert all(isinstance(r, packet.Error) and "busy" in r.message for r in refusals)
    for _ in range(100):
        if len(rig.reactor.ports) == 1:
            break
        rig.reactor.advance(10)
    assert rig.server.sessions == set()
    for i in range(500):
        rig.rrq("f", ("10.9.9.9", 3000 + i))
    assert len(rig.server.sessions) == 8
    rig.rrq("f", ("10.8.8.8", 4000))
    assert len(rig.server.sessions) == 9

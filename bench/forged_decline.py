"""Forged DHCPDECLINE/DHCPRELEASE against a full-mode pxetwist (issue 13 item 1).

    PYTHONPATH=$PWD python bench/forged_decline.py [--forged 1000]

Drives the real full-mode DHCP stack (the datagram protocol, ``DhcpServer``, the lease
pool and a SQLite store in a temporary folder) with encoded packets, in-process, on a
``task.Clock``; nothing is sent on any network. Client A completes DORA; then
``--forged`` DECLINEs and as many RELEASEs of A's address arrive, half from other MACs,
half with A's MAC but another client id (option 61), followed by as many DECLINEs of
the pool's free addresses from other MACs. Then A renews, and after the 600 s decline
hold a new client asks for A's address.

Prints: whether A's lease was evicted, A's renew answer, how many addresses ended up
quarantined (``declined`` in the store), and whether A's address was then offered to
another client while A still uses it. Run it on an older tree (``git archive`` of a
commit into a folder, ``PYTHONPATH`` on it) for the "before" figure.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from pxetwist.config import load_text
from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacket, encode, parse
from pxetwist.dhcp.service import DhcpService
from pxetwist.events import EventBus
from pxetwist.store import Store

SERVER = "10.77.0.1"
A = "52:54:00:12:34:56"


class _Port:
    """The protocol's transport: records what it sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(data)

    def setBroadcastAllowed(self, enabled: bool) -> None:
        pass


class _Reactor(Clock):
    """A Clock whose ``listenUDP`` hands out recording ports."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, _Port] = {}

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> _Port:
        self.ports[port] = bound = _Port()
        protocol.makeConnection(bound)
        return bound


def packet(kind: int, mac: str, *extra: tuple[int, bytes], **fields: Any) -> DhcpPacket:
    return DhcpPacket(op=BOOTREQUEST, xid=0x4242, chaddr=bytes.fromhex(mac.replace(":", "")),
                      options=[(opt.MESSAGE_TYPE, bytes([kind])), *extra], **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forged", type=int, default=1000)
    args = parser.parse_args()
    forged = max(1, min(args.forged, 100_000))
    folder = Path(tempfile.mkdtemp(prefix="pxetwist-forged-"))
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir()
    config = load_text(
        f"[server]\naddress = {SERVER}\n[dhcp]\nmode = full\nrange_start = 10.77.0.100\n"
        "range_end = 10.77.3.200\nnetmask = 255.255.252.0\nlease_time = 3600\n"
        "[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n", folder)
    reactor = _Reactor()
    reactor.advance(1_000_000)
    store = Store(folder / "state.sqlite")
    service = DhcpService(config, store, EventBus(reactor), reactor, SERVER,
                          f"http://{SERVER}:8080")
    service.privilegedStartService()
    port = reactor.ports[67]

    def send(request: DhcpPacket, source: tuple[str, int] = ("0.0.0.0", 68)) -> list[int]:
        port.sent.clear()
        service.main.datagramReceived(encode(request), source)
        reactor.advance(0)
        return [opt.message_type(parse(data)) or 0 for data in port.sent]

    sid = (opt.SERVER_ID, IPv4Address(SERVER).packed)
    send(packet(opt.DISCOVER, A))
    offered = parse(port.sent[0]).yiaddr
    send(packet(opt.REQUEST, A, sid, (opt.REQUESTED_IP, offered.packed)))
    for i in range(forged):
        stranger = f"02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"
        who: tuple[str, tuple[tuple[int, bytes], ...]] = (
            (stranger, ()) if i % 2 else (A, ((opt.CLIENT_ID, b"\x00forged" + bytes(4)),)))
        send(packet(opt.DECLINE, who[0], sid, (opt.REQUESTED_IP, offered.packed), *who[1]))
        send(packet(opt.RELEASE, who[0], sid, *who[1], ciaddr=offered))
        reactor.advance(0.001)
    first, last = int(IPv4Address("10.77.0.100")), int(IPv4Address("10.77.3.200"))
    for i in range(forged):
        target = IPv4Address(first + 1 + i % (last - first))
        send(packet(opt.DECLINE, f"02:01:00:{i >> 8 & 255:02x}:{i & 255:02x}:01", sid,
                    (opt.REQUESTED_IP, target.packed)))
    rows = {row.ip: row for row in store.leases_now()}
    a_row = rows.get(str(offered))
    evicted = a_row is None or a_row.mac != A or a_row.state != "bound"
    quarantined = sum(1 for row in rows.values() if row.state == "declined")
    renew = send(packet(opt.REQUEST, A, ciaddr=offered), (str(offered), 68))
    reactor.advance(601)
    send(packet(opt.DISCOVER, "52:54:00:99:99:99", (opt.REQUESTED_IP, offered.packed)))
    second = parse(port.sent[0]).yiaddr if port.sent else None
    print(f"forged DECLINE+RELEASE of A's {offered}: {forged} each; "
          f"forged DECLINEs of free addresses: {forged}")
    print(f"A's lease evicted: {'yes' if evicted else 'no'}; "
          f"A's renew answered: {opt.MESSAGE_NAMES.get(renew[0], '?') if renew else 'nothing'}")
    print(f"addresses quarantined (declined in the store): {quarantined}")
    print(f"A's address offered to another client 601 s later: "
          f"{'yes' if second == offered else 'no'}")
    store.close()
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()

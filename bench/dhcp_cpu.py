"""CPU time per DHCP exchange in one process, without the network: less at the mercy of a
shared machine's load than bench/dhcp_bench.py's rates.

    PYTHONPATH=TREE:. python bench/dhcp_cpu.py [--clients 5000] [--batch 100]

Runs the full-mode :class:`~pxetwist.dhcp.service.DhcpService` of the tree first on
``PYTHONPATH`` (so two trees can be compared) on a fake UDP reactor (tests/fakes.py),
with the machine registry and the boot-event counter subscribed as ``twistd pxeboot``
has them, and a real SQLite store run inline (its commits, fsync included, in this
thread). Clients look like perfdhcp's: relayed (giaddr set), sequential MACs, no PXE
options. ``--batch`` clients send their DISCOVERs, then their REQUESTs, between two
reactor turns, so leases go to disk in groups of that size as under load. Prints
process CPU microseconds per DORA (the harness's own encoding and parsing of the
client side included). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from twisted.logger import globalLogBeginner

from pxetwist import service as top
from pxetwist.config import load_text
from pxetwist.dhcp.packet import DhcpPacket, encode, parse
from pxetwist.dhcp.service import DhcpService
from pxetwist.events import EventBus
from pxetwist.machines import MachineRegistry
from pxetwist.store import Store
from tests.fakes import FakeUDPReactor

SERVER = "10.78.0.1"
RELAY = ("10.78.0.2", 67)


def request(kind: int, number: int, extra: list[tuple[int, bytes]] | None = None) -> bytes:
    chaddr = bytes((0, 0x0C, 1, (number >> 16) & 255, (number >> 8) & 255, number & 255))
    return encode(DhcpPacket(op=1, xid=number, chaddr=chaddr.ljust(16, b"\0"),
                             giaddr=IPv4Address(RELAY[0]),
                             options=[(53, bytes((kind,))), (55, bytes((1, 3, 6, 15))),
                                      *(extra or [])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000, help="max 100000")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    clients = min(max(args.clients, 1), 100_000)
    batch = min(max(args.batch, 1), clients)
    globalLogBeginner.beginLoggingTo([lambda event: None], discardBuffer=True,
                                     redirectStandardIO=False)
    folder = Path(tempfile.mkdtemp(prefix="pxetwist-dhcp-cpu-"))
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir()
    config = load_text(
        f"[server]\naddress = {SERVER}\n[dhcp]\nmode = full\nrange_start = 10.78.1.0\n"
        "range_end = 10.78.254.254\nnetmask = 255.255.0.0\nlease_time = 3600\n"
        "[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n", folder)
    reactor = FakeUDPReactor()
    reactor.advance(1_000_000)
    store = Store(folder / "state.sqlite")
    events = EventBus(reactor)
    MachineRegistry(store, events, reactor).start()
    events.subscribe(top._count_event)
    # as twistd pxeboot without --verbose (a tree older than packet_dumps has none)
    quiet = ({"packet_dumps": False}
             if "packet_dumps" in inspect.signature(DhcpService).parameters else {})
    service = DhcpService(config, store, events, reactor, SERVER, f"http://{SERVER}:8080",
                          **quiet)  # type: ignore[arg-type]
    service.privilegedStartService()
    port = reactor.ports[67]
    acks = 0
    started = time.process_time()
    for first in range(0, clients, batch):
        numbers = range(first, min(first + batch, clients))
        for number in numbers:
            port.deliver(request(1, number), RELAY)
        reactor.advance(0)
        offers = {(reply := parse(data)).xid: reply.yiaddr for data, _ in port.take()}
        for number in numbers:
            port.deliver(request(3, number, [(54, IPv4Address(SERVER).packed),
                                             (50, offers[number].packed)]), RELAY)
        reactor.advance(0)
        acks += len(port.take())
        reactor.advance(0.25)  # the machine registry's history flush
    reactor.advance(1)
    cpu = time.process_time() - started
    store.close()
    shutil.rmtree(folder, ignore_errors=True)
    print(f"{clients} DORA, {acks} ACKs, {cpu * 1e6 / clients:.0f} us CPU per DORA")


if __name__ == "__main__":
    main()

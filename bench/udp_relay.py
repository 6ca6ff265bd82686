"""A userspace UDP relay that adds a fixed one-way delay and seeded loss (this kernel has no
``sch_netem``). Clients talk to the relay's port; it forwards to the server and back.

    python bench/udp_relay.py --listen 127.0.0.1:7000 --server 127.0.0.1:6969 \
        --delay-ms 1 --loss 0.01 --seed 1 [--dup 0.05] [--reorder 0.05 --reorder-ms 5]

Each client address gets its own upstream socket; replies from any server port (a TFTP
server answers from a new port per transfer) go back to the client from the relay's
listening port, and the client's next datagrams go to the server port that spoke last,
except a TFTP request (RRQ/WRQ), which always goes to ``--server`` as a client's retried
request would on a real network.
``--dup`` sends a fraction of the forwarded datagrams twice (the copy ``--reorder-ms``
later); ``--reorder`` holds a fraction back by ``--reorder-ms`` extra, so datagrams sent
after it overtake it. Both default to 0 (and then draw nothing from the RNG, so a seeded
delay/loss run is the same as before they existed). Prints ``READY`` when listening;
counts are printed on SIGTERM.
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

from twisted.internet.protocol import DatagramProtocol


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Relay(DatagramProtocol):
    """The client-facing side."""

    noisy = False

    def __init__(self, server: tuple[str, int], delay: float, loss: float,
                 rng: random.Random, reactor: Any, dup: float = 0.0, reorder: float = 0.0,
                 reorder_delay: float = 0.005) -> None:
        self.server = server
        self.delay = delay
        self.loss = loss
        self.rng = rng
        self.reactor = reactor
        self.dup = dup
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.upstreams: dict[tuple[str, int], Upstream] = {}
        self.forwarded = 0
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        upstream = self.upstreams.get(addr)
        if upstream is None:
            upstream = Upstream(self, addr)
            self.reactor.listenUDP(0, upstream, interface="127.0.0.1")
            self.upstreams[addr] = upstream
        self.later(upstream.send_to_server, data)

    def later(self, send: Any, data: bytes) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.forwarded += 1
        delay = self.delay
        if self.reorder and self.rng.random() < self.reorder:
            self.reordered += 1
            delay += self.reorder_delay
        self.reactor.callLater(delay, send, data)
        if self.dup and self.rng.random() < self.dup:
            self.duplicated += 1
            self.reactor.callLater(delay + self.reorder_delay, send, data)

    def send_to_client(self, data: bytes, client: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.write(data, client)


class Upstream(DatagramProtocol):
    """The server-facing side of one client."""

    noisy = False

    def __init__(self, relay: Relay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client
        self.server = relay.server

    def send_to_server(self, data: bytes) -> None:
        assert self.transport is not None
        request = data[:2] in (b"\0\1", b"\0\2")  # a TFTP RRQ/WRQ: the well-known port
        self.transport.write(data, self.relay.server if request else self.server)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server = addr  # the transfer's TID
        self.relay.later(lambda d: self.relay.send_to_client(d, self.client), data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--delay-ms", type=float, default=1.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dup", type=float, default=0.0)
    parser.add_argument("--reorder", type=float, default=0.0)
    parser.add_argument("--reorder-ms", type=float, default=5.0)
    args = parser.parse_args()

    from twisted.internet import reactor

    host, port = parse_address(args.listen)
    relay = Relay(parse_address(args.server), args.delay_ms / 1000, args.loss,
                  random.Random(args.seed), reactor, args.dup, args.reorder,
                  args.reorder_ms / 1000)
    reactor.listenUDP(port, relay, interface=host)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "before", "shutdown",
        lambda: print(f"forwarded {relay.forwarded} dropped {relay.dropped} "
                      f"duplicated {relay.duplicated} reordered {relay.reordered}",
                      file=sys.stderr, flush=True))
    print("READY", flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()

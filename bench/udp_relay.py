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
delay/loss run is the same as without them). Prints ``READY`` when listening; counts are
printed on SIGTERM.

The loop is a plain ``select.select`` with a heap of due times, not a Twisted reactor:
``epoll`` (Twisted's default) rounds its timeout up to whole milliseconds, which turned
a 1 ms delay into 1-2 ms (a 2.35 ms round trip for "1 ms each way"); ``select`` waits
in microseconds, and the relay polls for the last 150 µs before a datagram is due, so
the round trip is 2 ms plus the relay's own few tens of µs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import heapq
import random
import select
import signal
import socket
import sys
import time
from itertools import count
from types import FrameType

Address = tuple[str, int]
#: Wake this long before a datagram is due and poll until it is: a sleeping wait
#: overshoots by the timer slack plus the wake-up (~90 µs here).
SPIN = 0.00015


def tighten_timer_slack() -> None:
    """Ask the kernel for 1 ns timer slack (default 50 µs) for this process."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def parse_address(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Relay:
    """Both sides of the relay in one select loop."""

    def __init__(self, listen: Address, server: Address, delay: float, loss: float,
                 rng: random.Random, dup: float = 0.0, reorder: float = 0.0,
                 reorder_delay: float = 0.005) -> None:
        self.server = server
        self.delay = delay
        self.loss = loss
        self.rng = rng
        self.dup = dup
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.duplicated = 0
        self.reordered = 0
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.front.bind(listen)
        self.front.setblocking(False)
        self.bind_host = listen[0] if listen[0] not in ("", "0.0.0.0") else "0.0.0.0"
        #: client address -> its upstream socket; upstream fd -> (socket, client, server)
        self.upstream_of: dict[Address, socket.socket] = {}
        self.route: dict[int, list[object]] = {}
        self.sockets: list[socket.socket] = [self.front]
        self.due: list[tuple[float, int, socket.socket, bytes, Address]] = []
        self.order = count()
        self.forwarded = 0
        self.dropped = 0
        self.running = True

    def later(self, sock: socket.socket, data: bytes, addr: Address) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.forwarded += 1
        delay = self.delay
        if self.reorder and self.rng.random() < self.reorder:
            self.reordered += 1
            delay += self.reorder_delay
        now = time.perf_counter()
        heapq.heappush(self.due, (now + delay, next(self.order), sock, data, addr))
        if self.dup and self.rng.random() < self.dup:
            self.duplicated += 1
            heapq.heappush(self.due, (now + delay + self.reorder_delay, next(self.order), sock,
                                      data, addr))

    def upstream(self, client: Address) -> socket.socket:
        sock = self.upstream_of.get(client)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind((self.bind_host, 0))
            sock.setblocking(False)
            self.upstream_of[client] = sock
            self.route[sock.fileno()] = [client, self.server]
            self.sockets.append(sock)
        return sock

    def read(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(70000)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable from a closed client or server port
                return
            if sock is self.front:
                upstream = self.upstream(addr)
                route = self.route[upstream.fileno()]
                request = data[:2] in (b"\0\1", b"\0\2")  # TFTP RRQ/WRQ: well-known port
                self.later(upstream, data,
                           self.server if request else route[1])  # type: ignore[arg-type]
            else:
                route = self.route[sock.fileno()]
                route[1] = addr  # the transfer's TID
                self.later(self.front, data, route[0])  # type: ignore[arg-type]

    def run(self) -> None:
        due = self.due
        while self.running:
            now = time.perf_counter()
            while due and due[0][0] <= now:
                _, _, sock, data, addr = heapq.heappop(due)
                with contextlib.suppress(OSError):
                    sock.sendto(data, addr)
            if due:
                wait = due[0][0] - time.perf_counter()
                # close to due: poll, don't sleep past it
                timeout = 0.0 if wait < SPIN else wait - SPIN
            else:
                timeout = 0.1
            try:
                ready, _, _ = select.select(self.sockets, [], [], timeout)
            except InterruptedError:
                continue
            for sock in ready:
                self.read(sock)


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

    tighten_timer_slack()
    relay = Relay(parse_address(args.listen), parse_address(args.server),
                  args.delay_ms / 1000, args.loss, random.Random(args.seed), args.dup,
                  args.reorder, args.reorder_ms / 1000)

    def stop(signum: int, frame: FrameType | None) -> None:
        relay.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY", flush=True)
    relay.run()
    print(f"forwarded {relay.forwarded} dropped {relay.dropped} duplicated "
          f"{relay.duplicated} reordered {relay.reordered}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

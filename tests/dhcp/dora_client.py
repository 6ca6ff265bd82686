"""A DHCP client that runs DORA exchanges as fast as it can, for the kill -9 test.

Run inside the client namespace:

    python -m tests.dhcp.dora_client --iface pxdcXXXX --out acks.jsonl --stop-file STOP

Half the exchanges use a new MAC, half repeat one that already has a lease. Every ACK
is written (and flushed) as one JSON line ``{"mac", "ip", "t_req"}``, where ``t_req`` is
the wall-clock time just before the REQUEST left: the server bound the lease after that,
so its stored expiry must be at least ``t_req + lease_time``. Stops when the stop file
appears or after ``--seconds``; prints a JSON summary of attempts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import time
from ipaddress import IPv4Address

from attrs import evolve

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import DhcpPacket, DhcpPacketError, parse
from tests.dhcp.clients import plain, requested, server_id, wire

_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def open_socket(iface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, iface.encode() + b"\0")
    sock.bind(("0.0.0.0", 68))
    return sock


def wait_for(sock: socket.socket, xid: int, kinds: tuple[int, ...], timeout: float
             ) -> DhcpPacket | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(4096)
        except TimeoutError:
            return None
        try:
            reply = parse(data)
        except DhcpPacketError:
            continue
        if reply.xid == xid and opt.message_type(reply) in kinds:
            return reply


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sock = open_socket(args.iface)
    leased: list[str] = []
    counts = {"attempts": 0, "offers": 0, "acks": 0, "naks": 0, "timeouts": 0}
    fresh = 0
    start = time.monotonic()
    with open(args.out, "a", buffering=1) as out:
        while time.monotonic() - start < args.seconds and not os.path.exists(args.stop_file):
            if leased and rng.random() < 0.5:
                mac = rng.choice(leased)
            else:
                fresh += 1
                mac = f"02:00:{fresh >> 16 & 255:02x}:{fresh >> 8 & 255:02x}:{fresh & 255:02x}:01"
            xid = rng.getrandbits(32)
            counts["attempts"] += 1
            discover = plain(opt.DISCOVER, mac=mac, flags=0x8000)
            sock.sendto(wire(evolve(discover, xid=xid)), ("255.255.255.255", 67))
            offer = wait_for(sock, xid, (opt.OFFER,), 0.3)
            if offer is None:
                counts["timeouts"] += 1
                continue
            counts["offers"] += 1
            request = plain(opt.REQUEST, mac=mac, flags=0x8000, options=[
                server_id(str(IPv4Address(offer.option(opt.SERVER_ID) or b"\0" * 4))),
                requested(str(offer.yiaddr))])
            t_req = time.time()
            sock.sendto(wire(evolve(request, xid=xid)), ("255.255.255.255", 67))
            answer = wait_for(sock, xid, (opt.ACK, opt.NAK), 0.3)
            if answer is None:
                counts["timeouts"] += 1
                continue
            if opt.message_type(answer) == opt.NAK:
                counts["naks"] += 1
                continue
            counts["acks"] += 1
            out.write(json.dumps({"mac": mac, "ip": str(answer.yiaddr), "t_req": t_req}) + "\n")
            if mac not in leased:
                leased.append(mac)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()

"""The client side of the live garbage test, run inside the test's namespace:

    python -m tests.integration.garbage_client --count 100000 --seconds 30 --seed 1

Sends ``count`` seeded random, truncated and mutated datagrams to DHCP (67, 4011) and
TFTP (69) on 127.0.0.1 at a bounded rate, stopping early at ``seconds``; then checks
that a valid DHCPINFORM and a valid RRQ are answered (each attempt waits 1 s, three
attempts). Prints one JSON object: what was sent, how many of those our own codecs
reject, the kernel's UDP receive-buffer drops in the namespace, and the probe answers.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import time
from ipaddress import IPv4Address
from typing import Any

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import DhcpPacketError
from pxetwist.dhcp.packet import parse as parse_dhcp
from pxetwist.tftp import packet as tftp
from tests.dhcp.clients import ipxe_rom, ovmf, plain, requested, server_id, wire

HOST = "127.0.0.1"
#: Garbage comes from another loopback address, so its TFTP sessions count against that
#: client's cap, not the probe's.
GARBAGE_FROM = "127.0.0.2"
PROBE_MAC = "52:54:00:99:99:99"


def dhcp_seeds() -> list[bytes]:
    return [wire(ipxe_rom(opt.DISCOVER)), wire(ovmf(opt.DISCOVER)),
            wire(ipxe_rom(opt.REQUEST, options=[server_id("10.77.0.1"),
                                                requested("10.77.0.100")])),
            wire(plain(opt.INFORM, ciaddr=IPv4Address("10.77.0.9"))),
            wire(plain(opt.RELEASE, ciaddr=IPv4Address("10.77.0.100")))]


def tftp_seeds() -> list[bytes]:
    return [tftp.encode_request(tftp.RRQ, "probe.bin", "octet", {"blksize": "1432",
                                                                "tsize": "0"}),
            tftp.encode_request(tftp.RRQ, "../etc/passwd", "netascii"),
            tftp.encode_request(tftp.WRQ, "x", "octet"), tftp.encode_ack(0),
            tftp.encode_error(8, "abort"), tftp.encode_oack({"blksize": "512"}),
            tftp.encode_data(1, b"d" * 512)]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete or overwrite a few bytes."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(4)
        if not buf:
            buf.append(rng.randrange(256))
        position = rng.randrange(len(buf))
        if choice == 0:
            buf[position] ^= 1 << rng.randrange(8)
        elif choice == 1:
            buf.insert(position, rng.randrange(256))
        elif choice == 2:
            del buf[position]
        else:
            buf[position] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(buf)


def garbage(rng: random.Random, seeds: list[bytes]) -> tuple[str, bytes]:
    kind = rng.choice(("random", "truncated", "mutated", "mutated"))
    if kind == "random":
        return kind, rng.randbytes(rng.randint(0, 700))
    seed = rng.choice(seeds)
    if kind == "truncated":
        return kind, seed[:rng.randrange(len(seed))]
    return kind, mutate(rng, seed)


def rejected(port: int, data: bytes) -> bool:
    """Whether our own codec refuses this datagram (so the server must count a drop)."""
    try:
        if port == 69:
            return not isinstance(tftp.parse(data), tftp.Request)
        return parse_dhcp(data).op != 1
    except (DhcpPacketError, tftp.TftpPacketError):
        return True


def rcvbuf_errors() -> int:
    """UDP datagrams the kernel dropped for full receive buffers (this namespace)."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def probe_dhcp() -> dict[str, Any]:
    """A DHCPINFORM from 127.0.0.1 (the ACK comes back unicast to us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(1.0)
        request = wire(plain(opt.INFORM, mac=PROBE_MAC, ciaddr=IPv4Address(HOST)))
        for attempt in range(1, 4):
            start = time.monotonic()
            sock.sendto(request, (HOST, 67))
            try:
                data, _ = sock.recvfrom(4096)
            except TimeoutError:
                continue
            reply = parse_dhcp(data)
            return {"answered": opt.message_type(reply) == opt.ACK, "attempt": attempt,
                    "ms": round((time.monotonic() - start) * 1000, 2)}
    return {"answered": False, "attempt": 3, "ms": None}


def probe_tftp() -> dict[str, Any]:
    """An RRQ for probe.bin, read to the end."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(1.0)
        for attempt in range(1, 4):
            start = time.monotonic()
            sock.sendto(tftp.encode_request(tftp.RRQ, "probe.bin", "octet"), (HOST, 69))
            try:
                data, session = sock.recvfrom(70000)
            except TimeoutError:
                continue
            first_ms = round((time.monotonic() - start) * 1000, 2)
            content = b""
            message = tftp.parse(data)
            while isinstance(message, tftp.Data):
                content += message.payload
                sock.sendto(tftp.encode_ack(message.block), session)
                if len(message.payload) < 512:
                    break
                message = tftp.parse(sock.recvfrom(70000)[0])
            return {"answered": True, "attempt": attempt, "ms": first_ms,
                    "bytes": len(content)}
    return {"answered": False, "attempt": 3, "ms": None, "bytes": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=8000.0, help="datagrams per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seeds = {67: dhcp_seeds(), 4011: dhcp_seeds(), 69: tftp_seeds()}
    ports = [67] * 9 + [4011] + [69] * 10
    sent = {"67": 0, "4011": 0, "69": 0}
    refused = {"67": 0, "4011": 0, "69": 0}
    kinds = {"random": 0, "truncated": 0, "mutated": 0}
    drops_before = rcvbuf_errors()
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((GARBAGE_FROM, 0))
        sock.setblocking(False)
        for i in range(args.count):
            now = time.monotonic() - start
            if now > args.seconds:
                break
            ahead = i / args.rate - now
            if ahead > 0.002:
                time.sleep(ahead)
            port = rng.choice(ports)
            kind, data = garbage(rng, seeds[port])
            kinds[kind] += 1
            try:
                sock.sendto(data, (HOST, port))
            except (BlockingIOError, OSError):
                continue
            sent[str(port)] += 1
            refused[str(port)] += rejected(port, data)
            if i % 256 == 0:  # TFTP sessions answer us: read and forget
                try:
                    while sock.recv(70000):
                        pass
                except (BlockingIOError, OSError):
                    pass
    seconds = time.monotonic() - start
    time.sleep(0.5)  # let the server drain its socket buffers
    result = {
        "sent": sent, "total": sum(sent.values()), "rejected_by_codec": refused,
        "kinds": kinds, "seconds": round(seconds, 2),
        "kernel_rcvbuf_drops": rcvbuf_errors() - drops_before,
        "dhcp_probe": probe_dhcp(), "tftp_probe": probe_tftp(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

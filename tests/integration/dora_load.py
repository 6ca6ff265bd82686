"""A DHCP DORA load for the failover test, run inside a client namespace: half new MACs,
half renewals (a known MAC doing DORA again), one at a time, for a fixed time.

Usage: ``python dora_load.py INTERFACE SECONDS SEED OUT.jsonl``. Each ACK is one JSON line:
``{"mac", "ip", "server", "sent", "acked", "lease", "waited"}`` (``sent``: when the REQUEST
left, ``waited``: seconds from the first DISCOVER to the OFFER). A DISCOVER unanswered is
sent again after :data:`RETRY` seconds; a NAK starts over.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from ipaddress import IPv4Address

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacket, encode
from tests.dhcp.dora_client import open_socket, wait_for

RETRY = 1.0


def packet(kind: int, mac: str, xid: int, extra: list[tuple[int, bytes]]) -> bytes:
    return encode(DhcpPacket(
        op=BOOTREQUEST, xid=xid, flags=0x8000,
        chaddr=bytes.fromhex(mac.replace(":", "")) + bytes(10),
        options=[(opt.MESSAGE_TYPE, bytes([kind])), (opt.PARAMETER_LIST, bytes([1, 3, 51])),
                 *extra]))


def dora(sock: socket.socket, mac: str, rng: random.Random, deadline: float) -> dict | None:
    """One DORA (starting over after a NAK); the ACK's record, or None at the deadline."""
    first = time.monotonic()
    while time.monotonic() < deadline:
        xid = rng.getrandbits(32)
        sock.sendto(packet(opt.DISCOVER, mac, xid, []), ("255.255.255.255", 67))
        offer = wait_for(sock, xid, (opt.OFFER,), RETRY)
        if offer is None:
            continue
        waited = time.monotonic() - first
        server = offer.option(opt.SERVER_ID) or b""
        sent = time.time()
        sock.sendto(packet(opt.REQUEST, mac, xid, [
            (opt.SERVER_ID, server), (opt.REQUESTED_IP, offer.yiaddr.packed)]),
            ("255.255.255.255", 67))
        reply = wait_for(sock, xid, (opt.ACK, opt.NAK), RETRY)
        if reply is None or opt.message_type(reply) == opt.NAK:
            continue
        lease = int.from_bytes(reply.option(opt.LEASE_TIME) or b"\0\0\0\0", "big")
        return {"mac": mac, "ip": str(reply.yiaddr), "server": str(IPv4Address(server)),
                "sent": sent, "acked": time.time(), "lease": lease, "waited": waited}
    return None


def main() -> None:
    interface, seconds, seed, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), \
        sys.argv[4]
    rng = random.Random(seed)
    sock = open_socket(interface)
    known: list[str] = []
    deadline = time.monotonic() + seconds
    with open(out, "a") as log:
        while time.monotonic() < deadline:
            if known and rng.random() < 0.5:
                mac = rng.choice(known)
            else:
                mac = "02:00:" + ":".join(f"{rng.getrandbits(8):02x}" for _ in range(4))
            record = dora(sock, mac, rng, deadline)
            if record is not None:
                if mac not in known:
                    known.append(mac)
                log.write(json.dumps(record) + "\n")
                log.flush()


if __name__ == "__main__":
    main()

"""Active-active DHCP: several servers share one pool (and one PostgreSQL state) and
split the clients between them by RFC 3074 hash buckets.

Each client falls in one of 256 buckets, the RFC 3074 hash of its client identifier
(option 61) or, without one, of its hardware address. Bucket ``b`` belongs to the peer
at index ``b % len(peers)`` of ``[dhcp] peers`` sorted: that one alone answers the
client's DISCOVERs. Every server writes a heartbeat row every second; a peer whose
heartbeat is older than ``[dhcp] peer_timeout`` counts as down, and its buckets are
spread over the peers still alive (bucket ``b`` to the live peer at ``b % len(alive)``),
until it beats again. Every server computes the same split from the same rows, so each
bucket has one server at a time, save for the moments a heartbeat ages out, when the
conditional bind of the leases (:meth:`pxetwist.store.Store.bind_leases`) still keeps
one address from going to two clients.

proxyDHCP hands out no address: every proxy answers, buckets or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import (
    BOOTREQUEST,
    HEADER,
    MAGIC,
    OPT_OVERLOAD,
    DhcpPacket,
    DhcpPacketError,
    walk_options,
)

#: RFC 3074 section 6: the mixing table, a permutation of 0..255.
MIXING_TABLE = bytes((
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232,
    31, 32, 55, 60, 152, 58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223,
    59, 3, 18, 140, 111, 166, 203, 196, 134, 243, 124, 95, 222, 179, 197, 65,
    180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97, 16,
    40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108, 244, 67,
    207, 9, 178, 204, 74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5,
    20, 113, 71, 35, 128, 13, 182, 94, 25, 226, 227, 199, 75, 27, 41, 245,
    230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241, 73, 88, 105,
    39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84,
    82, 163, 44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239,
    195, 42, 106, 198, 118, 112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253,
    137, 185, 99, 164, 102, 147, 45, 66, 231, 52, 141, 211, 194, 206, 246, 238,
    56, 110, 78, 248, 63, 240, 189, 93, 92, 51, 53, 183, 19, 171, 72, 50,
    33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125, 188, 213,
    96, 235, 136, 208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4,
    216, 131, 89, 21, 28, 133, 37, 153, 149, 80, 170, 68, 6, 169, 234, 151,
))

#: Seconds between two heartbeats of this server.
HEARTBEAT_INTERVAL = 1.0


def rfc3074_hash(key: bytes) -> int:
    """RFC 3074 section 6: the Pearson hash of ``key`` (its last byte first), 0..255."""
    value = len(key) & 0xFF
    for byte in reversed(key):
        value = MIXING_TABLE[value ^ byte]
    return value


def bucket_of(packet: DhcpPacket) -> int:
    """The client's hash bucket: over option 61's data when present and not empty,
    else over the hardware address (``chaddr`` cut to ``hlen``)."""
    client_id = packet.option(opt.CLIENT_ID)
    if client_id:
        return rfc3074_hash(client_id)
    return rfc3074_hash(packet.chaddr[:min(packet.hlen, 16)])


#: Where a datagram's options start (after the BOOTP header and the magic cookie).
_OPTIONS_AT = HEADER.size + len(MAGIC)
_CHADDR_AT = 28
#: The options :func:`_scan` reads: message type, server identifier, client identifier.
_SCANNED = frozenset((opt.MESSAGE_TYPE, opt.SERVER_ID, opt.CLIENT_ID))


def _scan(data: bytes) -> tuple[int, bytes | None, bytes | None] | None:
    """Options 53, 54 and 61 read straight from a BOOTREQUEST's bytes, without decoding
    the rest; ``None`` for anything the full parser must see (short, no cookie, a bad
    hardware address length, options overloaded, repeated or badly formed)."""
    if (len(data) < _OPTIONS_AT or data[0] != BOOTREQUEST or data[2] > 16
            or data[HEADER.size:_OPTIONS_AT] != MAGIC):
        return None
    found: dict[int, bytes] = {}
    try:
        for code, value in walk_options(data, _OPTIONS_AT):
            if code in _SCANNED:
                if code in found:
                    return None
                found[code] = value
            elif code == OPT_OVERLOAD:
                return None
    except DhcpPacketError:
        return None
    kind = found.get(opt.MESSAGE_TYPE)
    if kind is None or len(kind) != 1:
        return None
    return kind[0], found.get(opt.SERVER_ID), found.get(opt.CLIENT_ID)


class Balancer:
    """Which DISCOVERs this server answers, given the peers alive now.

    :param peers: every server identifier sharing the pool, this one included.
    :param me: this server's identifier.
    """

    def __init__(self, peers: Sequence[IPv4Address], me: IPv4Address) -> None:
        if me not in peers:
            raise ValueError(f"[dhcp] peers: this server ({me}) is not among them")
        self.peers = tuple(sorted(peers))
        self.me = me
        #: The peers whose heartbeat is fresh (all of them until the first beat is read).
        self.alive: tuple[IPv4Address, ...] = self.peers

    def set_alive(self, alive: Sequence[IPv4Address]) -> None:
        """The live peers as the heartbeat rows say (this server always counts)."""
        live = {peer for peer in alive if peer in self.peers} | {self.me}
        self.alive = tuple(sorted(live))

    def server_of(self, bucket: int) -> IPv4Address:
        """The server answering ``bucket`` now: its owner, or a live peer if it is down."""
        owner = self.peers[bucket % len(self.peers)]
        if owner in self.alive:
            return owner
        return self.alive[bucket % len(self.alive)]

    def serves(self, packet: DhcpPacket) -> bool:
        return self.server_of(bucket_of(packet)) == self.me

    def peers_message(self, data: bytes) -> int | None:
        """The message type of a datagram that is certainly a peer's business, read
        without decoding it: a DISCOVER of a client in a bucket another server answers
        now, or a REQUEST of such a client naming another server; ``None`` for anything
        else (decode it). With two servers on one segment, each gets every broadcast and
        half are the other's: decoding them cost a fifth of the server's time.

        A REQUEST dropped here keeps this server's offer to the client (made while its
        bucket's owner was down) until :data:`~pxetwist.dhcp.leases.OFFER_HOLD` ends."""
        scan = _scan(data)
        if scan is None:
            return None
        kind, server, client_id = scan
        if kind == opt.REQUEST:
            if server is None or len(server) != 4 or server == self.me.packed:
                return None
        elif kind != opt.DISCOVER:
            return None
        key = client_id or data[_CHADDR_AT:_CHADDR_AT + data[2]]
        return None if self.server_of(rfc3074_hash(key)) == self.me else kind

    def taken_over(self) -> tuple[IPv4Address, ...]:
        """The peers down now, whose buckets the live ones serve."""
        return tuple(peer for peer in self.peers if peer not in self.alive)


class HeartbeatService(Service):
    """Beats every :data:`HEARTBEAT_INTERVAL` seconds in the shared state and reads the
    others' beats into the balancer. A failed beat (database away) changes nothing."""

    name = "dhcp-heartbeat"
    _log = Logger()

    def __init__(self, balancer: Balancer, store: Any, timeout: float, clock: Any) -> None:
        self.balancer = balancer
        self.store = store
        self.timeout = timeout
        self._loop = LoopingCall(self.beat)
        self._loop.clock = clock
        self._down: tuple[IPv4Address, ...] = ()

    def startService(self) -> None:
        super().startService()
        self._loop.start(HEARTBEAT_INTERVAL, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def beat(self) -> Any:
        d = self.store.heartbeat(str(self.balancer.me), self.timeout)
        d.addCallbacks(self._alive, self._failed)
        return d

    def _alive(self, alive: Sequence[str]) -> None:
        self.balancer.set_alive([IPv4Address(a) for a in alive])
        down = self.balancer.taken_over()
        if down != self._down:
            if down:
                self._log.warn("DHCP peers down, their clients answered by the others: "
                               "{down}", down=", ".join(map(str, down)))
            else:
                self._log.info("DHCP peers all up: {peers}",
                               peers=", ".join(map(str, self.balancer.peers)))
            self._down = down

    def _failed(self, failure: Failure) -> None:
        self._log.warn("DHCP heartbeat not written: {error}", error=failure.getErrorMessage())

"""What full mode and proxy mode share: reading a request's client facts, where a reply
goes (RFC 2131 4.1), the boot fields of a decision, the options echoed back, and the
guards (per-MAC rate limit, throttled and once-per-MAC warnings).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from attrs import define, field
from twisted.logger import Logger

from pxetwist.arch import BY_CODE
from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import ZERO, DhcpPacket
from pxetwist.policy import BootDecision, ClientFacts

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]
BROADCAST = "255.255.255.255"
CLIENT_PORT = 68
SERVER_PORT = 67

#: Per-MAC rate limit: at most this many messages per :data:`RATE_WINDOW` seconds.
RATE_LIMIT = 20
RATE_WINDOW = 1.0
#: Seconds between two "pool exhausted" warnings.
EXHAUSTED_LOG_INTERVAL = 60.0


def facts_of(packet: DhcpPacket) -> ClientFacts:
    """The client facts the boot policy needs, read from a request."""
    return ClientFacts(packet.mac, opt.client_arch(packet), opt.vendor_class(packet),
                       opt.is_ipxe(packet), opt.machine_uuid(packet))


def arch_name(facts: ClientFacts) -> str:
    arch = BY_CODE.get(facts.arch) if facts.arch is not None else None
    return arch.name if arch else ("" if facts.arch is None else f"unknown-{facts.arch}")


def destination(request: DhcpPacket, reply_type: int, source: Address) -> Address:
    """Where a reply goes (RFC 2131 4.1): via the relay, to the client's address, or
    broadcast (the client has no address yet, asked for broadcast, or gets a NAK).

    Unicast to ``yiaddr`` before the client has it would need an ARP entry set from
    user space; broadcast reaches it just as well.
    """
    if request.giaddr != ZERO:
        return str(request.giaddr), SERVER_PORT
    if reply_type == opt.NAK:
        return BROADCAST, CLIENT_PORT
    if request.ciaddr != ZERO:
        return str(request.ciaddr), source[1] if source[1] != SERVER_PORT else CLIENT_PORT
    return BROADCAST, CLIENT_PORT


def boot_fields(decision: BootDecision, server: str) -> tuple[IPv4Address, bytes,
                                                              list[tuple[int, bytes]]]:
    """``siaddr``, ``file`` and options 66/67 for a boot decision."""
    filename = decision.filename.encode("latin-1", "replace")
    siaddr = IPv4Address(decision.next_server or server)
    options = [(opt.TFTP_SERVER, str(siaddr).encode()), (opt.BOOTFILE, filename)]
    return siaddr, filename if len(filename) <= 127 else b"", options


def echoed(request: DhcpPacket) -> list[tuple[int, bytes]]:
    """Options a reply must carry back unchanged: 97 (UUID) and 82 (relay agent)."""
    return [(code, value) for code in (opt.CLIENT_UUID, opt.RELAY_AGENT)
            if (value := request.option(code)) is not None]


class RateLimiter:
    """At most :data:`RATE_LIMIT` messages per MAC per :data:`RATE_WINDOW` seconds, so one
    client (or a flood of one) cannot starve the rest; memory stays bounded."""

    def __init__(self, clock: Any, limit: int = RATE_LIMIT, window: float = RATE_WINDOW,
                 max_clients: int = 50_000) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._max_clients = max_clients
        self._seen: dict[str, tuple[float, int]] = {}

    def allow(self, mac: str) -> bool:
        now = self._clock.seconds()
        start, count = self._seen.get(mac, (now, 0))
        if now - start >= self._window:
            start, count = now, 0
        if count >= self._limit:
            return False
        if len(self._seen) >= self._max_clients and mac not in self._seen:
            self._seen = {m: v for m, v in self._seen.items() if now - v[0] < self._window}
            if len(self._seen) >= self._max_clients:
                return False
        self._seen[mac] = (start, count + 1)
        return True


@define
class ThrottledWarning:
    """A warning logged at most once per ``interval`` seconds, saying how many more
    occurrences went unlogged since: a flood must not become a flood of log lines."""

    clock: Any
    interval: float
    _logged_at: float = float("-inf")
    _unlogged: int = 0

    def due(self) -> int | None:
        """Count one occurrence: how many went unlogged before it if it is to be logged
        now, else ``None``."""
        now = self.clock.seconds()
        if now - self._logged_at < self.interval:
            self._unlogged += 1
            return None
        more, self._unlogged, self._logged_at = self._unlogged, 0, now
        return more


@define
class OncePerKey:
    """Says yes the first time it sees a key (a MAC), for one log line per client;
    forgets everything after ``limit`` keys, so a flood of MACs cannot grow it."""

    limit: int = 10_000
    _seen: set[str] = field(factory=set)

    def first(self, key: str) -> bool:
        if key in self._seen:
            return False
        if len(self._seen) >= self.limit:
            self._seen.clear()
        self._seen.add(key)
        return True


def log_no_loader(log: Logger, once: OncePerKey, mac: str, decision: BootDecision) -> None:
    """Once per MAC: this client gets no boot file, and why."""
    if once.first(mac):
        log.warn("no boot file for {mac} ({arch}): {reason}", mac=mac, arch=decision.arch,
                 reason=decision.reason)

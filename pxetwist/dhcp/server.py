"""The full-mode DHCP server (RFC 2131): the controller behind port 67 in full mode.

:class:`~pxetwist.dhcp.protocol.DhcpDatagramProtocol` only decodes and hands each
request to :meth:`DhcpServer.message_received`; this module (and
:class:`~pxetwist.dhcp.proxy.ProxyServer`) decides, with the helpers both modes share
in :mod:`pxetwist.dhcp.replies`. A controller answers by calling its ``send`` with the
reply and where it goes, chosen per RFC 2131 4.1 by
:func:`~pxetwist.dhcp.replies.destination`.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from pxetwist.config import DhcpConfig
from pxetwist.dhcp import options as opt
from pxetwist.dhcp.balance import Balancer
from pxetwist.dhcp.leases import LeasePool
from pxetwist.dhcp.packet import (
    BOOTREPLY,
    ZERO,
    DhcpPacket,
    encode,
)
from pxetwist.dhcp.replies import (
    EXHAUSTED_LOG_INTERVAL,
    Address,
    OncePerKey,
    RateLimiter,
    Send,
    ThrottledWarning,
    arch_name,
    boot_fields,
    destination,
    echoed,
    facts_of,
    log_no_loader,
)
from pxetwist.events import EventBus, Stage
from pxetwist.metrics import (
    DHCP_DROPPED,
    DHCP_PACKETS,
    DHCP_REPLIES,
    DHCP_REPLY_SECONDS,
    ByLabel,
)
from pxetwist.policy import BootDecision, BootPolicy
from pxetwist.store import LeaseTakenError


class DhcpServer:
    """Full mode: addresses from the pool plus boot options.

    :param send: sends bytes to an address (the port-67 protocol's ``send``).
    :param server: our address (option 54, siaddr).
    """

    _log = Logger()

    def __init__(self, config: DhcpConfig, pool: LeasePool, policy: BootPolicy,
                 events: EventBus, clock: Any, server: str, send: Send) -> None:
        self.config = config
        self.pool = pool
        self.policy = policy
        self.events = events
        self.clock = clock
        self.server = IPv4Address(server)
        self._server_text = str(self.server)
        #: The options every reply with a lease carries after 53 and 54, and those of an
        #: INFORM's ACK (no lease times): the same for every client, so made once.
        self._network_options = network_options(config, pool.network.broadcast_address)
        time = config.lease_time
        self._lease_options = [
            self._network_options[0], (opt.LEASE_TIME, time.to_bytes(4, "big")),
            (opt.RENEWAL_TIME, (time // 2).to_bytes(4, "big")),
            (opt.REBINDING_TIME, (time * 7 // 8).to_bytes(4, "big")),
            *self._network_options[1:]]
        self.send = send
        self.limiter = RateLimiter(clock)
        self._exhausted = ThrottledWarning(clock, EXHAUSTED_LOG_INTERVAL)
        self._not_holder = ThrottledWarning(clock, EXHAUSTED_LOG_INTERVAL)
        self._no_loader = OncePerKey()
        #: When the message being handled arrived: a reply sent while handling it (OFFER,
        #: NAK) is timed from here; an ACK, sent after its commit, carries its own.
        self._arrived = 0.0
        self._handlers = {opt.DISCOVER: self._discover, opt.REQUEST: self._request,
                          opt.DECLINE: self._decline, opt.RELEASE: self._release,
                          opt.INFORM: self._inform}  # made once: 3 % of a storm per packet
        self._packets = ByLabel(DHCP_PACKETS)
        self._replies = ByLabel(DHCP_REPLIES)
        #: With ``[dhcp] peers``: whose DISCOVERs this server answers (RFC 3074 buckets).
        self.balancer: Balancer | None = None

    # -- dispatch --------------------------------------------------------------------

    def message_received(self, packet: DhcpPacket, source: Address,
                         arrived: float | None = None) -> None:
        """Handle one request (``arrived``: when it was read, if it waited)."""
        self._arrived = self.clock.seconds() if arrived is None else arrived
        kind = opt.message_type(packet)
        self._packets(opt.MESSAGE_NAMES.get(kind or 0, "BOOTP")).inc()
        if kind is None:
            DHCP_DROPPED.labels(reason="bootp").inc()
            return
        if not self.limiter.allow(packet.mac):
            DHCP_DROPPED.labels(reason="rate-limit").inc()
            return
        handler = self._handlers.get(kind)
        if handler is None:
            DHCP_DROPPED.labels(reason="unexpected-type").inc()
            return
        handler(packet, source)

    def screen(self, data: bytes) -> bool:
        """Whether a datagram is a peer's client's (with ``[dhcp] peers``), seen before it
        is decoded: counted as received and dropped here, and not decoded at all."""
        kind = self.balancer.peers_message(data) if self.balancer is not None else None
        if kind is None:
            return False
        self._packets(opt.MESSAGE_NAMES[kind]).inc()
        DHCP_DROPPED.labels(reason="peer-bucket").inc()
        return True

    # -- messages --------------------------------------------------------------------

    def _discover(self, packet: DhcpPacket, source: Address) -> None:
        if self.balancer is not None and not self.balancer.serves(packet):
            DHCP_DROPPED.labels(reason="peer-bucket").inc()  # a peer's client
            return
        if not self.pool.can_commit():  # the database is away: an ACK could not follow
            DHCP_DROPPED.labels(reason="store-unavailable").inc()
            return
        key = opt.client_key(packet)
        ip = self.pool.allocate(key, packet.mac, opt.requested_ip(packet))
        if ip is None:
            DHCP_DROPPED.labels(reason="pool-exhausted").inc()
            self._warn_exhausted(packet.mac)
            return
        assert isinstance(ip, IPv4Address)  # an IPv4 pool
        self._reply(packet, source, opt.OFFER, ip, Stage.DHCP_OFFER)

    def _warn_exhausted(self, mac: str) -> None:
        """One warning per :data:`EXHAUSTED_LOG_INTERVAL` seconds, with how many more
        clients went without."""
        more = self._exhausted.due()
        if more is not None:
            self._log.warn("DHCP pool exhausted: no offer for {mac} ({more} more since the "
                           "last warning)", mac=mac, more=more)

    def _request(self, packet: DhcpPacket, source: Address) -> None:
        key = opt.client_key(packet)
        chosen = opt.server_id(packet)
        requested = opt.requested_ip(packet)
        if chosen is not None:  # SELECTING
            if chosen != self.server:
                self.pool.forget_offer(key)
                return
            if requested is None:
                self._nak(packet, source, "no requested address")
            elif why := self.pool.unavailable_because(requested, key, packet.mac):
                self._nak(packet, source, why)
            else:
                self._ack(packet, source, requested, key)
            return
        if requested is not None:  # INIT-REBOOT
            if requested not in self.pool.network:
                self._nak(packet, source, "wrong network")
            elif why := self.pool.unavailable_because(requested, key, packet.mac):
                self._nak(packet, source, why)
            else:
                self._ack(packet, source, requested, key)
            return
        if packet.ciaddr != ZERO:  # RENEWING / REBINDING
            why = self.pool.unavailable_because(packet.ciaddr, key, packet.mac)
            if why is None:
                self._ack(packet, source, packet.ciaddr, key)
            elif packet.ciaddr in self.pool.network:
                self._nak(packet, source, why)
            return
        DHCP_DROPPED.labels(reason="bad-request").inc()

    def _ack(self, packet: DhcpPacket, source: Address, ip: IPv4Address, key: str) -> None:
        """Commit the lease, then (and only then) send the ACK."""
        d = self.pool.bind(ip, key, packet.mac, opt.hostname(packet))
        arrived = self._arrived

        def not_bound(failure: Failure) -> None:
            if failure.check(LeaseTakenError):  # another server sharing the state won
                self._nak(packet, source, "address taken by another server", arrived)
            else:
                self._not_stored(failure, "DHCPREQUEST", ip, packet.mac)

        d.addCallbacks(lambda _: self._reply(packet, source, opt.ACK, ip, Stage.DHCP_ACK,
                                             arrived), not_bound)
        d.addErrback(lambda f: self._log.failure("DHCPACK of {ip} to {mac} failed", f, ip=ip,
                                                 mac=packet.mac))

    def _nak(self, packet: DhcpPacket, source: Address, why: str,
             arrived: float | None = None) -> None:
        reply = DhcpPacket(
            op=BOOTREPLY, xid=packet.xid, chaddr=packet.chaddr, htype=packet.htype,
            hlen=packet.hlen, flags=packet.flags, giaddr=packet.giaddr,
            options=[(opt.MESSAGE_TYPE, bytes((opt.NAK,))), (opt.SERVER_ID, self.server.packed),
                     (opt.MESSAGE, why.encode()), *echoed(packet)],
        )
        self._log.info("DHCPNAK to {mac}: {why}", mac=packet.mac, why=why)
        self.events.publish(Stage.DHCP_NAK, mac=packet.mac, detail=why)
        self._send(packet, source, opt.NAK, reply, arrived)

    def _decline(self, packet: DhcpPacket, source: Address) -> None:
        ip = opt.requested_ip(packet)
        if ip is None or opt.server_id(packet) not in (None, self.server):
            return
        d = self.pool.decline(ip, opt.client_key(packet), packet.mac)
        if d is None:
            self._not_lease_holder("DECLINE", ip, packet)
            return
        self._log.warn("DHCPDECLINE of {ip} from {mac}: address quarantined", ip=ip,
                       mac=packet.mac)
        self.events.publish(Stage.DHCP_DECLINE, mac=packet.mac, ip=str(ip))
        d.addErrback(self._not_stored, "DHCPDECLINE", ip, packet.mac)

    def _release(self, packet: DhcpPacket, source: Address) -> None:
        ip = packet.ciaddr
        if ip == ZERO:
            return
        d = self.pool.release(ip, opt.client_key(packet), packet.mac)
        if d is None:
            self._not_lease_holder("RELEASE", ip, packet)
            return
        self._log.info("DHCPRELEASE of {ip} from {mac}", ip=ip, mac=packet.mac)
        self.events.publish(Stage.DHCP_RELEASE, mac=packet.mac, ip=str(ip))
        d.addErrback(self._not_stored, "DHCPRELEASE", ip, packet.mac)

    def _not_lease_holder(self, kind: str, ip: IPv4Address, packet: DhcpPacket) -> None:
        """A DECLINE or RELEASE of a lease the sender does not hold: dropped, counted,
        logged once per :data:`EXHAUSTED_LOG_INTERVAL` seconds."""
        DHCP_DROPPED.labels(reason="not-lease-holder").inc()
        more = self._not_holder.due()
        if more is not None:
            self._log.warn("DHCP{kind} of {ip} from {mac} ignored: not the lease holder "
                           "({more} more such messages since the last warning)", kind=kind,
                           ip=ip, mac=packet.mac, more=more)

    def _not_stored(self, failure: Failure, what: str, ip: IPv4Address, mac: str) -> None:
        DHCP_DROPPED.labels(reason="store-failed").inc()
        self._log.warn("{what} of {ip} from {mac} not stored: {error}", what=what, ip=ip,
                       mac=mac, error=failure.getErrorMessage())

    def _inform(self, packet: DhcpPacket, source: Address) -> None:
        self._reply(packet, source, opt.ACK, None, Stage.DHCP_ACK)

    # -- replies ---------------------------------------------------------------------

    def _reply(self, packet: DhcpPacket, source: Address, kind: int, ip: IPv4Address | None,
               stage: str, arrived: float | None = None) -> None:
        facts = facts_of(packet)
        booting = facts.is_pxe_client or facts.is_ipxe
        # only a booting client needs a boot decision: a plain DHCP client gets an address
        decision = self.policy.decide(facts) if booting else NO_BOOT
        if booting and decision.how == "none":  # an address, but no wrong loader
            log_no_loader(self._log, self._no_loader, packet.mac, decision)
            booting = False
        options: list[tuple[int, bytes]] = [(opt.MESSAGE_TYPE, bytes((kind,))),
                                            (opt.SERVER_ID, self.server.packed)]
        # not for INFORM: no lease, no lease times
        options += self._lease_options if ip is not None else self._network_options
        siaddr, filename = ZERO, b""
        if booting:
            siaddr, filename, boot_options = boot_fields(decision, self._server_text)
            options += boot_options
            # Option 60 only where it helps: iPXE waits 3 s for a proxy without it, while
            # OVMF's own PXE client rejects it in a full-mode offer without option 43.
            if facts.is_ipxe or facts.is_http_client:
                options.append((opt.VENDOR_CLASS, (decision.vendor_class or "PXEClient")
                                .encode()))
        options += echoed(packet)
        options = opt.order_options(options, opt.parameter_list(packet))
        reply = DhcpPacket(
            op=BOOTREPLY, xid=packet.xid, chaddr=packet.chaddr, htype=packet.htype,
            hlen=packet.hlen, flags=packet.flags, ciaddr=packet.ciaddr,
            yiaddr=ip or ZERO, siaddr=siaddr, giaddr=packet.giaddr, file=filename,
            options=options,
        )
        name = opt.MESSAGE_NAMES[kind]
        boot_file = decision.filename if booting else ""
        arch = arch_name(facts)
        if kind == opt.ACK and ip is not None:
            self._log.info("DHCPACK {ip} to {mac}{boot}", ip=ip, mac=packet.mac,
                           boot=f" ({arch or '-'}) boot {boot_file}" if booting else "")
        self.events.publish(stage, mac=packet.mac, ip=str(ip or packet.ciaddr),
                            detail=f"{name} {boot_file}".rstrip(), arch=arch, uuid=facts.uuid)
        self._send(packet, source, kind, reply, arrived)

    def _send(self, request: DhcpPacket, source: Address, kind: int, reply: DhcpPacket,
              arrived: float | None = None) -> None:
        """Send ``reply`` where RFC 2131 says, timing it from ``arrived`` (``None``: the
        message being handled now)."""
        data = encode(reply)
        where = destination(request, kind, source)
        self._replies(opt.MESSAGE_NAMES[kind]).inc()
        DHCP_REPLY_SECONDS.observe(
            self.clock.seconds() - (self._arrived if arrived is None else arrived))
        delay = self.config.reply_delay / 1000
        if delay > 0:
            self.clock.callLater(delay, self.send, data, where)
        else:
            self.send(data, where)



#: The decision for a client that does not boot from us (never read but for its type).
NO_BOOT = BootDecision("none", "", "", None, "", "not a network boot client")


def network_options(config: DhcpConfig, broadcast: IPv4Address | IPv6Address
                    ) -> list[tuple[int, bytes]]:
    """Options 1, 28, 3, 6 and 15 of our network, in the order replies carry them."""
    options = [(opt.SUBNET_MASK, config.netmask.packed), (opt.BROADCAST, broadcast.packed)]
    if config.router is not None:
        options.append((opt.ROUTER, config.router.packed))
    if config.dns:
        options.append((opt.DNS, b"".join(a.packed for a in config.dns)))
    if config.domain:
        options.append((opt.DOMAIN, config.domain.encode()))
    return options

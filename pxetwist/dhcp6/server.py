"""DHCPv6 decisions (RFC 8415) with the RFC 5970 boot options.

:class:`Dhcp6Server` is the controller the protocol hands every decoded message
to. ``full`` mode leases addresses (IA_NA) from ``[dhcp6] range_start..range_end``
through the same :class:`~pxetwist.dhcp.leases.LeasePool` as IPv4 (durable before
the Reply); ``stateless`` mode answers only boot clients, with boot options and no
address (the IPv6 counterpart of proxy mode). What a client boots comes from the
same :class:`~pxetwist.policy.BootPolicy` as on IPv4: option 61 is option 93.

Which machine it is: DHCPv6 clients name themselves by DUID, and OVMF and iPXE send
a DUID-UUID (no MAC). The MAC comes from option 79 of a relay, else a DUID-LL/LLT,
else the client's link-local EUI-64 source address; :class:`Client6` says which.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv6Address
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from pxetwist.arch import BY_CODE
from pxetwist.config import Dhcp6Config
from pxetwist.dhcp.leases import LeasePool
from pxetwist.dhcp.replies import OncePerKey, RateLimiter
from pxetwist.dhcp6 import packet as p6
from pxetwist.dhcp6.packet import Dhcp6PacketError, IaAddress, IaNa, Message6, Packet, Relay6
from pxetwist.events import EventBus, Stage
from pxetwist.metrics import DHCP_DROPPED, DHCP_PACKETS, DHCP_REPLIES
from pxetwist.policy import BootDecision, BootPolicy, ClientFacts

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

#: What a client message may be, by where it arrives.
_CLIENT_TYPES = (p6.SOLICIT, p6.REQUEST, p6.CONFIRM, p6.RENEW, p6.REBIND, p6.RELEASE,
                 p6.DECLINE, p6.INFORMATION_REQUEST)


@frozen
class Client6:
    """What a DHCPv6 client said about itself, and how we know its MAC.

    :ivar duid: its DUID (option 1).
    :ivar mac: ``aa:bb:..``, or ``""`` when nothing gives it.
    :ivar matched_on: where the MAC came from: ``option-79``, ``duid-ll``, ``duid-llt``,
        ``eui-64`` (the link-local source address) or ``none``.
    :ivar address: the client's own address (the source, or the relay's peer address).
    """

    duid: p6.Duid
    mac: str
    matched_on: str
    address: IPv6Address
    facts: ClientFacts

    @property
    def key(self) -> str:
        """The rate limiter's key: the MAC, else the DUID."""
        return self.mac or "duid:" + self.duid.raw.hex()

    @property
    def booting(self) -> bool:
        return self.facts.is_pxe_client or self.facts.is_ipxe or self.facts.arch is not None


def client_of(message: Message6, address: IPv6Address, relay_mac: str) -> Client6:
    """:raises Dhcp6PacketError: without a client identifier, or with a malformed
    option we read."""
    body = message.option(p6.CLIENTID)
    if body is None:
        raise Dhcp6PacketError("no client identifier")
    duid = p6.parse_duid(body)
    if relay_mac:
        mac, matched = relay_mac, "option-79"
    elif duid.mac:
        mac, matched = duid.mac, {1: "duid-llt", 3: "duid-ll"}[duid.kind]
    elif eui := p6.eui64_mac(address):
        mac, matched = eui, "eui-64"
    else:
        mac, matched = "", "none"
    arch_body = message.option(p6.CLIENT_ARCH)
    arches = p6.parse_u16_list(arch_body) if arch_body is not None else ()
    vendor = ""
    vendor_body = message.option(p6.VENDOR_CLASS)
    if vendor_body is not None:
        _, items = p6.parse_vendor_class(vendor_body)
        vendor = items[0].decode("latin-1") if items else ""
    user_body = message.option(p6.USER_CLASS)
    user = p6.parse_opaque_list(user_body) if user_body is not None else ()
    facts = ClientFacts(mac, arches[0] if arches else None, vendor, b"iPXE" in user, duid.uuid)
    return Client6(duid, mac, matched, address, facts)


def boot_url(decision: BootDecision, server: IPv6Address) -> str:
    """Option 59 for a decision: ``tftp://[addr]/file`` or the HTTP URL."""
    if decision.how == "tftp":
        return f"tftp://[{server}]/{decision.filename.lstrip('/')}"
    return decision.filename


def arch_name(facts: ClientFacts) -> str:
    arch = BY_CODE.get(facts.arch) if facts.arch is not None else None
    return arch.name if arch else ("" if facts.arch is None else f"unknown-{facts.arch}")


class Dhcp6Server:
    """Answers DHCPv6 clients, directly or through relays.

    :param pool: full mode's lease pool; ``None`` for stateless mode.
    :param server_duid: our DUID (option 2).
    :param server: our IPv6 address, for ``tftp://[addr]/`` URLs.
    :param send: sends bytes to an address (the protocol's ``send``).
    :param boot_server: this controller serves port 4011, where OVMF asks the server
        of a stateless (proxy) Advertise for its boot file: it answers Requests from
        boot clients whoever they chose, with boot options only.
    """

    _log = Logger()

    def __init__(self, config: Dhcp6Config, pool: LeasePool | None, policy: BootPolicy,
                 events: EventBus, clock: Any, server_duid: bytes, server: IPv6Address,
                 send: Send, boot_server: bool = False) -> None:
        self.config = config
        self.pool = pool
        self.policy = policy
        self.events = events
        self.clock = clock
        self.duid = server_duid
        self.server = server
        self.send = send
        self.boot_server = boot_server
        self.limiter = RateLimiter(clock)
        self._no_loader = OncePerKey()
        #: MAC -> (matched_on, DUID hex) of the last DHCPv6 message from it, for explain.
        self.identities: dict[str, tuple[str, str]] = {}

    # -- dispatch --------------------------------------------------------------------

    def message_received(self, packet: Packet, source: Address) -> None:
        """Decide about one decoded datagram from ``source`` (``(host, port)``)."""
        relays: list[Relay6] = []
        message = packet
        while isinstance(message, Relay6):
            if message.msg_type != p6.RELAY_FORW:
                DHCP_DROPPED.labels(reason="unexpected-type").inc()
                return
            relays.append(message)
            message = message.message
        name = p6.MESSAGE_NAMES.get(message.msg_type, "?")
        DHCP_PACKETS.labels(type="DHCPv6 " + name).inc()
        if message.msg_type not in _CLIENT_TYPES:
            DHCP_DROPPED.labels(reason="unexpected-type").inc()
            return
        if relays:
            address = relays[-1].peer
            relay_mac = p6.link_layer_mac(relays[-1].option(p6.CLIENT_LINKLAYER) or b"")
        else:
            address = IPv6Address(source[0].split("%", 1)[0])
            relay_mac = ""
        client = client_of(message, address, relay_mac)
        if not self.limiter.allow(client.key):
            DHCP_DROPPED.labels(reason="rate-limit").inc()
            return
        if (self.pool is None or self.boot_server) and not client.booting:
            DHCP_DROPPED.labels(reason="not-pxe").inc()
            return
        if client.mac:
            if len(self.identities) > 50_000:
                self.identities.clear()
            self.identities[client.mac] = (client.matched_on, client.duid.raw.hex())
        server_id = message.option(p6.SERVERID)
        if message.msg_type in (p6.SOLICIT, p6.CONFIRM, p6.REBIND, p6.INFORMATION_REQUEST):
            if server_id is not None and message.msg_type != p6.INFORMATION_REQUEST:
                DHCP_DROPPED.labels(reason="bad-request").inc()
                return
        elif server_id != self.duid and not self.boot_server:
            return  # meant for another server
        reply = self._answer(message, client)
        if isinstance(reply, Deferred):
            reply.addCallback(self._send, message, client, relays, source)
            reply.addErrback(self._not_stored, message, client)
        elif reply is not None:
            self._send(reply, message, client, relays, source)

    def _answer(self, message: Message6, client: Client6
                ) -> Message6 | Deferred[Message6] | None:
        kind = message.msg_type
        if self.pool is None or self.boot_server:
            if kind == p6.SOLICIT and not self.boot_server:
                return self._message(p6.ADVERTISE, message, client, [])
            if kind in (p6.REQUEST, p6.INFORMATION_REQUEST):
                return self._message(p6.REPLY, message, client, [])
            return None  # the site's server answers the rest
        pool = self.pool
        if kind == p6.INFORMATION_REQUEST:
            return self._message(p6.REPLY, message, client, [])
        if kind == p6.SOLICIT:
            if message.option(p6.RAPID_COMMIT) is not None:
                return self._bind_all(message, client, [(p6.RAPID_COMMIT, b"")], True)
            return self._advertise(message, client, pool)
        if kind in (p6.REQUEST, p6.RENEW, p6.REBIND):
            return self._bind_all(message, client, [], kind == p6.REQUEST)
        if kind in (p6.RELEASE, p6.DECLINE):
            return self._give_back(message, client, pool)
        return self._confirm(message, client, pool)

    # -- full mode -------------------------------------------------------------------

    def _key(self, client: Client6, iaid: int) -> str:
        return f"duid:{client.duid.raw.hex()}/{iaid}"

    def _lifetimes(self) -> tuple[int, int, int, int]:
        """T1, T2, preferred and valid lifetime."""
        preferred, valid = self.config.preferred_lifetime, self.config.lease_time
        base = preferred or valid
        return base // 2, base * 4 // 5, preferred, valid

    def _ias(self, message: Message6) -> list[IaNa]:
        return [p6.parse_ia_na(body) for body in message.all(p6.IA_NA)]

    def _advertise(self, message: Message6, client: Client6, pool: LeasePool) -> Message6:
        t1, t2, preferred, valid = self._lifetimes()
        options: list[tuple[int, bytes]] = []
        for ia in self._ias(message):
            wanted = ia.addresses[0].address if ia.addresses else None
            if not pool.can_commit():  # the database is away: a Reply could not follow
                DHCP_DROPPED.labels(reason="store-unavailable").inc()
                options.append((p6.IA_NA, p6.encode_ia_na(IaNa(
                    ia.iaid, 0, 0, (), (p6.status(p6.NO_ADDRS_AVAIL, "state unavailable"),)))))
                continue
            ip = pool.allocate(self._key(client, ia.iaid), client.mac, wanted)
            if ip is None:
                DHCP_DROPPED.labels(reason="pool-exhausted").inc()
                options.append((p6.IA_NA, p6.encode_ia_na(IaNa(
                    ia.iaid, 0, 0, (), (p6.status(p6.NO_ADDRS_AVAIL, "pool exhausted"),)))))
                continue
            assert isinstance(ip, IPv6Address)
            options.append((p6.IA_NA, p6.encode_ia_na(IaNa(
                ia.iaid, t1, t2, (IaAddress(ip, preferred, valid),)))))
        return self._message(p6.ADVERTISE, message, client, options)

    def _bind_all(self, message: Message6, client: Client6, extra: list[tuple[int, bytes]],
                  allocate: bool) -> Deferred[Message6] | Message6:
        """Bind an address to every IA_NA (the one asked for when it may be had, else, for
        a Solicit or Request, a new one); the Reply once all are on disk."""
        assert self.pool is not None
        pool = self.pool
        t1, t2, preferred, valid = self._lifetimes()
        pending: list[Deferred[None]] = []
        options: list[tuple[int, bytes]] = list(extra)
        hostname = ""
        for ia in self._ias(message):
            key = self._key(client, ia.iaid)
            ip: Any = None
            for held in ia.addresses:
                if pool.available_for(held.address, key, client.mac):
                    ip = held.address
                    break
            if ip is None and allocate:
                ip = pool.allocate(key, client.mac, None)
            if ip is None:
                if allocate:
                    DHCP_DROPPED.labels(reason="pool-exhausted").inc()
                code = p6.NO_ADDRS_AVAIL if allocate else p6.NO_BINDING
                gone = tuple(IaAddress(a.address, 0, 0) for a in ia.addresses
                             if a.address not in pool.network)
                options.append((p6.IA_NA, p6.encode_ia_na(IaNa(
                    ia.iaid, 0, 0, gone, (p6.status(code, "no address for this IA"),)))))
                continue
            pending.append(pool.bind(ip, key, client.mac, hostname))
            options.append((p6.IA_NA, p6.encode_ia_na(IaNa(
                ia.iaid, t1, t2, (IaAddress(ip, preferred, valid),)))))
        reply = self._message(p6.REPLY, message, client, options)
        if not pending:
            return reply
        return gatherResults(pending, consumeErrors=True).addCallback(lambda _: reply)

    def _give_back(self, message: Message6, client: Client6, pool: LeasePool
                   ) -> Deferred[Message6] | Message6:
        """Release or Decline: every address this client holds goes back (or into
        quarantine); the Reply once that is on disk."""
        decline = message.msg_type == p6.DECLINE
        pending: list[Deferred[None]] = []
        for ia in self._ias(message):
            key = self._key(client, ia.iaid)
            for held in ia.addresses:
                d = (pool.decline if decline else pool.release)(held.address, key, client.mac)
                if d is not None:
                    pending.append(d)
                    self._log.info("DHCPv6 {kind} of {ip} from {mac}", ip=held.address,
                                   mac=client.mac or "-",
                                   kind="Decline" if decline else "Release")
                    self.events.publish(Stage.DHCP_DECLINE if decline else Stage.DHCP_RELEASE,
                                        mac=client.mac, ip=str(held.address))
        reply = self._message(p6.REPLY, message, client, [p6.status(p6.SUCCESS)], boot=False)
        if not pending:
            return reply
        return gatherResults(pending, consumeErrors=True).addCallback(lambda _: reply)

    def _confirm(self, message: Message6, client: Client6, pool: LeasePool) -> Message6 | None:
        addresses = [a.address for ia in self._ias(message) for a in ia.addresses]
        if not addresses:
            return None
        on_link = all(a in pool.network for a in addresses)
        code = p6.SUCCESS if on_link else p6.NOT_ON_LINK
        return self._message(p6.REPLY, message, client, [p6.status(code)], boot=False)

    # -- replies ---------------------------------------------------------------------

    def _message(self, kind: int, request: Message6, client: Client6,
                 options: list[tuple[int, bytes]], boot: bool = True) -> Message6:
        out: list[tuple[int, bytes]] = [(p6.SERVERID, self.duid),
                                        (p6.CLIENTID, client.duid.raw), *options]
        if self.config.dns:
            out.append((p6.DNS_SERVERS, b"".join(a.packed for a in self.config.dns)))
        if boot and client.booting:
            decision = self.policy.decide(client.facts)
            if decision.how == "none":
                if self._no_loader.first(client.key):
                    self._log.warn("no boot file for {mac} ({arch}): {reason}",
                                   mac=client.mac or client.key, arch=decision.arch,
                                   reason=decision.reason)
            else:
                out.append((p6.BOOTFILE_URL, boot_url(decision, self.server).encode()))
                if client.facts.is_http_client:
                    out.append(p6.vendor_class(p6.ENTERPRISE_PXE, b"HTTPClient"))
                elif self.pool is None or self.boot_server:
                    # a proxy answer: OVMF takes it only with vendor class PXEClient
                    out.append(p6.vendor_class(p6.ENTERPRISE_PXE, b"PXEClient"))
        return Message6(kind, request.xid, tuple(out))

    def _send(self, reply: Message6, request: Message6, client: Client6, relays: list[Relay6],
              source: Address) -> None:
        name = p6.MESSAGE_NAMES[reply.msg_type]
        addresses = [str(a.address) for body in reply.all(p6.IA_NA)
                     for a in p6.parse_ia_na(body).addresses if a.valid]
        url = (reply.option(p6.BOOTFILE_URL) or b"").decode("latin-1")
        if request.msg_type in (p6.REQUEST, p6.RENEW, p6.REBIND, p6.SOLICIT,
                                p6.INFORMATION_REQUEST):
            stage = Stage.DHCP_OFFER if reply.msg_type == p6.ADVERTISE else Stage.DHCP_ACK
            if self.pool is None or self.boot_server:
                stage = Stage.PROXY_OFFER if reply.msg_type == p6.ADVERTISE else Stage.PROXY_ACK
            if reply.msg_type == p6.REPLY:
                self._log.info("DHCPv6 Reply {ips} to {mac} (MAC from {matched}){boot}",
                               ips=", ".join(addresses) or "(no address)",
                               mac=client.mac or "-", matched=client.matched_on,
                               boot=f" ({arch_name(client.facts) or '-'}) boot {url}"
                               if url else "")
            # no address of ours: the one it asks from (the site server's lease, on port
            # 4011), so that its TFTP and HTTP fetches are charged to its MAC
            own = "" if client.address.is_link_local else str(client.address)
            self.events.publish(stage, mac=client.mac, ip=", ".join(addresses) or own,
                                detail=f"DHCPv6 {name} {url}".rstrip()
                                + f" (MAC from {client.matched_on})",
                                arch=arch_name(client.facts), uuid=client.facts.uuid)
        out: Packet = reply
        for relay in reversed(relays):
            echoed = tuple((c, b) for c, b in relay.options if c == p6.INTERFACE_ID)
            out = Relay6(p6.RELAY_REPL, relay.hop_count, relay.link, relay.peer, out, echoed)
        DHCP_REPLIES.labels(type="DHCPv6 " + name).inc()
        self.send(p6.encode(out), source)

    def _not_stored(self, failure: Failure, message: Message6, client: Client6) -> None:
        DHCP_DROPPED.labels(reason="store-failed").inc()
        self._log.warn("DHCPv6 {kind} from {mac}: lease not stored, no Reply: {error}",
                       kind=p6.MESSAGE_NAMES[message.msg_type], mac=client.mac or client.key,
                       error=failure.getErrorMessage())

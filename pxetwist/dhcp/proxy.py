"""ProxyDHCP (DHCP-07): boot options beside the site's own DHCP server, never an address.

On port 67 it answers only PXE and HTTP-boot clients' DISCOVERs, with an OFFER
whose ``yiaddr`` is 0 and which carries option 60, 97, 43 and the boot file.
A BIOS PXE ROM then asks port 4011 (a REQUEST, often with xid 0, from port 68
or 4011); that REQUEST gets an ACK with the boot file, sent back where it came
from. UEFI clients are told (option 43, discovery control 8) to use the boot
file of the offer, so they boot whether or not they come back on 4011.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from twisted.logger import Logger

from pxetwist.config import DhcpConfig
from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREPLY, ZERO, DhcpPacket, encode
from pxetwist.dhcp.replies import (
    BROADCAST,
    CLIENT_PORT,
    SERVER_PORT,
    Address,
    OncePerKey,
    RateLimiter,
    Send,
    arch_name,
    boot_fields,
    echoed,
    facts_of,
    log_no_loader,
)
from pxetwist.events import EventBus, Stage
from pxetwist.metrics import DHCP_DROPPED, DHCP_PACKETS, DHCP_REPLIES, DHCP_REPLY_SECONDS
from pxetwist.policy import BootPolicy


class ProxyServer:
    """Answers PXE clients on port 67 (``boot_server=False``) or 4011 (``True``).

    :param send: sends bytes to an address, from the port this controller serves.
    """

    _log = Logger()

    def __init__(self, config: DhcpConfig, policy: BootPolicy, events: EventBus, clock: Any,
                 server: str, send: Send, boot_server: bool) -> None:
        self.config = config
        self.policy = policy
        self.events = events
        self.clock = clock
        self.server = IPv4Address(server)
        self.send = send
        self.boot_server = boot_server
        self.limiter = RateLimiter(clock)
        self._no_loader = OncePerKey()

    def message_received(self, packet: DhcpPacket, source: Address,
                         arrived: float | None = None) -> None:
        arrived = self.clock.seconds() if arrived is None else arrived
        kind = opt.message_type(packet)
        DHCP_PACKETS.labels(type=opt.MESSAGE_NAMES.get(kind or 0, "BOOTP")).inc()
        facts = facts_of(packet)
        if not (facts.is_pxe_client or facts.is_ipxe):
            DHCP_DROPPED.labels(reason="not-pxe").inc()
            return
        if self.boot_server:
            if kind not in (opt.REQUEST, opt.INFORM):
                DHCP_DROPPED.labels(reason="unexpected-type").inc()
                return
        elif kind != opt.DISCOVER:
            return  # REQUESTs on 67 belong to the site's DHCP server
        if not self.limiter.allow(packet.mac):
            DHCP_DROPPED.labels(reason="rate-limit").inc()
            return
        decision = self.policy.decide(facts)
        if decision.how == "none":  # no answer rather than a loader for another arch
            DHCP_DROPPED.labels(reason="no-loader").inc()
            log_no_loader(self._log, self._no_loader, packet.mac, decision)
            return
        siaddr, filename, boot_options = boot_fields(decision, str(self.server))
        bios = facts.arch in (None, 0)
        options: list[tuple[int, bytes]] = [
            (opt.MESSAGE_TYPE, bytes((opt.ACK if self.boot_server else opt.OFFER,))),
            (opt.SERVER_ID, self.server.packed),
            (opt.VENDOR_CLASS, (decision.vendor_class or "PXEClient").encode()),
        ]
        if self.boot_server:
            options.append((opt.VENDOR_SPECIFIC,
                            opt.pxe_boot_item_reply(packet.option(opt.VENDOR_SPECIFIC))))
        elif not facts.is_http_client:
            options.append((opt.VENDOR_SPECIFIC,
                            opt.pxe_vendor_options(self.server, bios and not facts.is_ipxe)))
        options += boot_options
        options += echoed(packet)
        reply = DhcpPacket(
            op=BOOTREPLY, xid=packet.xid, chaddr=packet.chaddr, htype=packet.htype,
            hlen=packet.hlen, flags=packet.flags, ciaddr=packet.ciaddr, siaddr=siaddr,
            giaddr=packet.giaddr, file=filename,
            options=opt.order_options(options, opt.parameter_list(packet)),
        )
        if self.boot_server:
            where = (source if packet.giaddr == ZERO else (str(packet.giaddr), SERVER_PORT))
            stage, name = Stage.PROXY_ACK, "ACK"
        else:
            where = ((str(packet.giaddr), SERVER_PORT) if packet.giaddr != ZERO
                     else (BROADCAST, CLIENT_PORT))
            stage, name = Stage.PROXY_OFFER, "OFFER"
        self._log.info("proxyDHCP {kind} to {mac} ({arch}) boot {file}", kind=name,
                       mac=packet.mac, arch=arch_name(facts) or "-", file=decision.filename)
        self.events.publish(stage, mac=packet.mac, ip=str(packet.ciaddr) if packet.ciaddr
                            != ZERO else "", detail=f"proxy {name} {decision.filename}",
                            arch=arch_name(facts), uuid=facts.uuid)
        DHCP_REPLIES.labels(type="PROXY" + name).inc()
        DHCP_REPLY_SECONDS.observe(self.clock.seconds() - arrived)
        data = encode(reply)
        delay = self.config.reply_delay / 1000
        if delay > 0:
            self.clock.callLater(delay, self.send, data, where)
        else:
            self.send(data, where)

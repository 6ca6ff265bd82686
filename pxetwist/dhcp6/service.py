"""The DHCPv6 service: UDP 547 at ``ff02::1:2`` on one interface (and 4011 in stateless
mode, where OVMF asks the server of a proxy Advertise for its boot file).

The sockets are made here (``IPV6_V6ONLY``, the group joined on the interface's
index, ``SO_BINDTODEVICE``) and handed to Twisted with ``adoptDatagramPort``.
"""

from __future__ import annotations

import socket
import struct
import uuid
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pxetwist.config import Config, ConfigError
from pxetwist.dhcp.leases import LeasePool
from pxetwist.dhcp6.packet import duid_ll
from pxetwist.dhcp6.protocol import Dhcp6DatagramProtocol
from pxetwist.dhcp6.server import Dhcp6Server
from pxetwist.dualstack import stop_listening
from pxetwist.events import EventBus
from pxetwist.netinfo import interface_address6
from pxetwist.policy import BootPolicy
from pxetwist.store import Store

ALL_DHCP_SERVERS = "ff02::1:2"
SERVER_PORT = 547
_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def server_duid(interface: str) -> bytes:
    """Our DUID-LL: the interface's MAC (else this host's node id)."""
    try:
        text = Path(f"/sys/class/net/{interface}/address").read_text().strip()
        mac = bytes.fromhex(text.replace(":", ""))
    except (OSError, ValueError):
        mac = b""
    if len(mac) != 6 or not any(mac):
        mac = uuid.getnode().to_bytes(6, "big")
    return duid_ll(mac)


def dhcp6_socket(port: int, interface: str, group: bool) -> socket.socket:
    """A non-blocking IPv6-only UDP socket on ``[::]:port`` tied to ``interface``, in the
    All_DHCP_Relay_Agents_and_Servers group when ``group``."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode() + b"\0")
        sock.bind(("::", port))
        if group:
            index = socket.if_nametoindex(interface)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            socket.inet_pton(socket.AF_INET6, ALL_DHCP_SERVERS)
                            + struct.pack("@I", index))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Dhcp6Service(Service):
    """Owns the DHCPv6 ports and their controllers.

    :ivar address: our IPv6 address (in ``tftp://[addr]/`` and ``http://[addr]:port``).
    :ivar pool: full mode's pool, ``None`` in stateless mode.
    :ivar base_url: the HTTP base written into IPv6 clients' URLs and scripts.
    """

    name = "dhcp6"
    _log = Logger()

    def __init__(self, config: Config, store: Store, events: EventBus, reactor: Any,
                 address: IPv6Address, base_url: str, interface: str,
                 ports: tuple[int, int] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.address = address
        self.interface = interface
        self.base_url = base_url
        self.policy = BootPolicy(config.boot, base_url, str(address))
        dhcp6 = config.dhcp6
        self.pool = LeasePool(dhcp6, store, reactor) if dhcp6.mode == "full" else None
        duid = server_duid(interface)
        self.main = Dhcp6DatagramProtocol(interface=interface)
        self.main.controller = self.controller = Dhcp6Server(
            dhcp6, self.pool, self.policy, events, reactor, duid, address, self.main.send)
        self.boot_server = Dhcp6DatagramProtocol(interface=interface)
        self.boot_server.controller = Dhcp6Server(
            dhcp6, None, self.policy, events, reactor, duid, address, self.boot_server.send,
            boot_server=True)
        self._port_numbers = ports or (SERVER_PORT, config.dhcp.proxy_port)
        self._ports: list[Any] = []

    def identity(self, mac: str) -> dict[str, Any]:
        """For explain: what the last DHCPv6 message from ``mac`` matched on, its DUID,
        and the boot file it gets over IPv6."""
        matched, duid = self.controller.identities.get(mac, ("not seen", ""))
        return {"arch": "dhcpv6", "code": None, "how": "dhcpv6", "file": "",
                "reason": f"DHCPv6 {self.config.dhcp6.mode}: MAC matched on {matched}",
                "matched_on": matched, "duid": duid}

    def leases_in_use(self) -> int:
        return self.pool.in_use() if self.pool is not None else 0

    def _listen(self, port: int, protocol: Dhcp6DatagramProtocol, group: bool) -> Any:
        sock = dhcp6_socket(port, self.interface, group)
        try:
            return self.reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET6, protocol)
        finally:
            sock.close()

    def port_numbers(self) -> list[int]:
        return [port.getHost().port for port in self._ports]

    def privilegedStartService(self) -> None:
        if self.pool is not None:
            self.pool.load()
        main, boot = self._port_numbers
        self._ports = [self._listen(main, self.main, True)]
        if self.pool is None:
            self._ports.append(self._listen(boot, self.boot_server, False))
        super().privilegedStartService()

    def startService(self) -> None:
        if not self._ports:
            self.privilegedStartService()
        self._log.info("DHCPv6 {mode} on {interface} as {address}",
                       mode=self.config.dhcp6.mode, interface=self.interface,
                       address=self.address)
        super().startService()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        ports, self._ports = self._ports, []
        return stop_listening(ports)


def dhcp6_address(config: Config) -> IPv6Address:
    """``[dhcp6] address``, else the interface's first global address.

    :raises ConfigError: when the interface has none.
    """
    if config.dhcp6.address is not None:
        return config.dhcp6.address
    interface = config.dhcp6.interface or config.server.interface
    address = interface_address6(interface)
    if address is None:
        raise ConfigError(f"[dhcp6] address: empty and {interface} has no global IPv6 "
                         "address to write into boot URLs")
    return address


def build_dhcp6_service(config: Config, store: Store, events: EventBus, reactor: Any,
                        ports: tuple[int, int] | None = None) -> Dhcp6Service:
    """The DHCPv6 service for ``[dhcp6] mode`` stateless or full (``off``: don't call)."""
    address = dhcp6_address(config)
    base_url = config.http.public_url or f"http://[{address}]:{config.http.port}"
    interface = config.dhcp6.interface or config.server.interface
    return Dhcp6Service(config, store, events, reactor, address, base_url, interface, ports)

"""The DHCP service: binds port 67 (and the PXE boot-server port 4011) as root.

Full mode answers with addresses from the pool; proxy mode with boot options
only. Both answer the boot-server port, so a PXE ROM that comes back to 4011
is served either way. With ``[server] interface`` the sockets are bound to
that interface (``SO_BINDTODEVICE``) and handed to Twisted with
``adoptDatagramPort``, so pxetwist never answers on another network.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pxetwist import signed
from pxetwist.config import Config
from pxetwist.dhcp.balance import Balancer, HeartbeatService
from pxetwist.dhcp.leases import LeasePool
from pxetwist.dhcp.protocol import DhcpDatagramProtocol
from pxetwist.dhcp.proxy import ProxyServer
from pxetwist.dhcp.server import DhcpServer
from pxetwist.dualstack import stop_listening
from pxetwist.events import EventBus
from pxetwist.policy import BootPolicy
from pxetwist.sockets import enlarge_port_buffers
from pxetwist.store import Store

_SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def bound_socket(port: int, interface: str) -> socket.socket:
    """A non-blocking UDP socket on ``0.0.0.0:port`` (broadcasts reach it), tied to
    ``interface``. Needs root (or CAP_NET_RAW) for the tie, like the low port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_BINDTODEVICE, interface.encode() + b"\0")
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DhcpService(Service):
    """Owns the DHCP ports and the controllers behind them.

    :ivar policy: the boot policy (also used by HTTP's explain endpoint).
    :ivar pool: full mode's lease pool, ``None`` in proxy mode.
    """

    name = "dhcp"
    _log = Logger()

    def __init__(self, config: Config, store: Store, events: EventBus, reactor: Any,
                 server_address: str, base_url: str,
                 loader_of: Callable[[str], str | None] | None = None,
                 packet_dumps: bool = True) -> None:
        self.config = config
        self.reactor = reactor
        self.policy = BootPolicy(config.boot, base_url, server_address, loader_of)
        self.pool: LeasePool | None = None
        self.main = DhcpDatagramProtocol(packet_dumps=packet_dumps, clock=reactor)
        self.boot_server = DhcpDatagramProtocol(packet_dumps=packet_dumps, clock=reactor)
        dhcp = config.dhcp
        self.main_controller: DhcpServer | ProxyServer
        if dhcp.mode == "full":
            self.pool = LeasePool(dhcp, store, reactor)
            self.main_controller = DhcpServer(dhcp, self.pool, self.policy, events, reactor,
                                              server_address, self.main.send)
        else:
            self.main_controller = ProxyServer(dhcp, self.policy, events, reactor,
                                               server_address, self.main.send, False)
        self.boot_controller = ProxyServer(dhcp, self.policy, events, reactor,
                                           server_address, self.boot_server.send, True)
        self.main.controller = self.main_controller
        self.boot_server.controller = self.boot_controller
        self._ports: list[Any] = []
        self.heartbeat: HeartbeatService | None = None
        if isinstance(self.main_controller, DhcpServer) and dhcp.peers:
            # full mode only: proxies answer every client, no buckets
            balancer = Balancer(dhcp.peers, IPv4Address(server_address))
            self.main_controller.balancer = balancer
            self.main.screen = self.main_controller.screen
            assert self.pool is not None
            self.pool.share(balancer.peers.index(balancer.me), len(balancer.peers))
            self.heartbeat = HeartbeatService(balancer, store, dhcp.peer_timeout, reactor)

    def leases_in_use(self) -> int:
        """Bound, unexpired leases (for the status line)."""
        return self.pool.in_use() if self.pool is not None else 0

    def port_numbers(self) -> list[int]:
        """The bound ports: the DHCP port, then the boot-server port."""
        return [port.getHost().port for port in self._ports]

    def _listen(self, port: int, protocol: DhcpDatagramProtocol) -> Any:
        interface = self.config.server.interface
        if not interface:
            return self.reactor.listenUDP(port, protocol, interface="")
        sock = bound_socket(port, interface)
        try:
            return self.reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET, protocol)
        finally:
            sock.close()  # the reactor holds its own copy

    def privilegedStartService(self) -> None:
        if self.pool is not None:
            self.pool.load()
        self._ports = [self._listen(self.config.dhcp.port, self.main),
                       self._listen(self.config.dhcp.proxy_port, self.boot_server)]
        enlarge_port_buffers(self._ports)  # a rack powering on at once (pxetwist.sockets)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self._ports:
            self.privilegedStartService()
        missing = self.policy.architectures_without_loader()
        if missing:
            self._log.info("no boot loader for: {names} (these clients get no boot file; "
                           "set [boot.files] to serve them)", names=", ".join(missing))
        folders = (self.config.tftp.root, self.config.tftp.ipxe_dir)
        for entry in self.policy.files_not_found(folders):
            self._log.warn("[boot.files] {entry}: no such file in [tftp] root or ipxe_dir",
                           entry=entry)
        chain_missing = signed.missing_line(self.config.boot, folders)
        if chain_missing:
            self._log.warn("{line}", line=chain_missing)
        if self.heartbeat is not None:
            self.heartbeat.startService()
        super().startService()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        if self.heartbeat is not None and self.heartbeat.running:
            self.heartbeat.stopService()
        ports, self._ports = self._ports, []
        return stop_listening(ports)


def build_dhcp_service(config: Config, store: Store, events: EventBus, reactor: Any,
                       server_address: str, base_url: str,
                       loader_of: Callable[[str], str | None] | None = None,
                       packet_dumps: bool = True) -> DhcpService:
    """The DHCP service for ``[dhcp] mode`` full or proxy (``off``: don't call this);
    ``loader_of``: MAC -> the machine's own EFI loader; ``packet_dumps``: a debug event
    per datagram (see :class:`~pxetwist.dhcp.protocol.DhcpDatagramProtocol`)."""
    return DhcpService(config, store, events, reactor, server_address, base_url, loader_of,
                       packet_dumps)

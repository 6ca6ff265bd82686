"""The TFTP service: binds ``[tftp] address``:``port`` as root, serves until stopped.

An empty ``[tftp] address`` listens on both families: ``0.0.0.0`` and ``[::]`` (an
IPv6-only socket, so IPv4 clients keep their plain addresses); an IPv4 or IPv6
address listens on that one.

A boot storm sends its requests at once: the kernel's default receive buffer (~208 KiB,
a few hundred small datagrams) overflows, and a dropped RRQ costs that client its whole
retry timeout (1 s or more). Each listening socket asks for
:data:`pxetwist.sockets.LISTEN_RCVBUF` (``SO_RCVBUFFORCE`` as root, past
``net.core.rmem_max``; else what ``rmem_max`` allows).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.config import Config
from pxetwist.dualstack import stop_listening
from pxetwist.events import EventBus
from pxetwist.sockets import enlarge_port_buffers
from pxetwist.tftp.files import FileResolver
from pxetwist.tftp.server import TftpServerProtocol


class TftpListener(DatagramProtocol):
    """The second listening port (IPv6 beside IPv4): hands requests to the one server
    protocol with this port as the transport for its refusals."""

    noisy = False

    def __init__(self, server: TftpServerProtocol) -> None:
        self.server = server

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        self.server.request_received(data, (addr[0], addr[1]), self.transport)


def _ipv6_only_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class TftpService(Service):
    """Owns the listening port and the running sessions.

    The port is bound in ``privilegedStartService`` (port 69 needs root), so
    ``twistd -u/-g`` can drop privileges afterwards.
    """

    name = "tftp"
    _log = Logger()

    def __init__(self, protocol: TftpServerProtocol, port: int, interface: str,
                 reactor: Any) -> None:
        self.protocol = protocol
        self._port_number = port
        self._interface = interface
        self._reactor = reactor
        self._listening: Any = None
        self._listening6: Any = None

    @property
    def active_transfers(self) -> int:
        """Transfers running now (for the status line)."""
        return len(self.protocol.sessions)

    def port_number(self) -> int:
        """The bound port (useful with ``port = 0``); the configured one before binding."""
        if self._listening is None:
            return self._port_number
        port: int = self._listening.getHost().port
        return port

    def privilegedStartService(self) -> None:
        if ":" in self._interface:  # one IPv6 address
            self._listening = self._listen6(self._interface, self._port_number,
                                            self.protocol)
        else:
            self._listening = self._reactor.listenUDP(self._port_number, self.protocol,
                                                      interface=self._interface)
        if not self._interface:
            try:
                self._listening6 = self._listen6("::", self.port_number(),
                                                 TftpListener(self.protocol))
            except OSError as e:  # IPv6 off on this host
                self._log.warn("TFTP not on IPv6: {error}", error=e)
        granted = enlarge_port_buffers((self._listening, self._listening6))
        self._log.debug("TFTP receive buffers: {granted} bytes", granted=granted)
        super().privilegedStartService()

    def _listen6(self, address: str, port: int, protocol: DatagramProtocol) -> Any:
        if not IReactorSocket.providedBy(self._reactor):
            return self._reactor.listenUDP(port, protocol, interface=address)
        sock = _ipv6_only_socket(address, port)
        try:
            return self._reactor.adoptDatagramPort(sock.fileno(), socket.AF_INET6, protocol,
                                                   8192)
        finally:
            sock.close()

    def startService(self) -> None:
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.protocol.stop_sessions()
        ports = [port for port in (self._listening, self._listening6) if port is not None]
        self._listening = self._listening6 = None
        stopped = stop_listening(ports)
        return stopped.addCallback(lambda _: None) if stopped is not None else None


def build_tftp_service(
    config: Config,
    events: EventBus,
    reactor: Any,
    generated: Callable[[str], bytes | None] | None = None,
    mac_for_ip: Callable[[str], str] | None = None,
    linked: Callable[[str], Path | None] | None = None,
) -> TftpService:
    """The TFTP service over ``[tftp] root`` then ``ipxe_dir`` then ``linked`` files
    (served under another name) then ``generated`` files."""
    resolver = FileResolver((config.tftp.root, config.tftp.ipxe_dir), generated,
                            trusted=(config.tftp.ipxe_dir,), linked=linked)
    protocol = TftpServerProtocol(config.tftp, resolver, events, reactor, mac_for_ip)
    return TftpService(protocol, config.tftp.port, config.tftp.address, reactor)

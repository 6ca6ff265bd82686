"""Listening on both IP families with one port number: IPv4 on ``0.0.0.0`` and an
IPv6-only socket on ``[::]`` (``IPV6_V6ONLY``), so IPv4 peers keep their plain
addresses (no ``::ffff:`` mapping) and each family can be bound alone."""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger


def stop_listening(ports: list[Any]) -> Deferred[Any] | None:
    """Stop every port; a Deferred firing when all have stopped, or ``None`` if none
    needed waiting for (what ``stopService`` returns)."""
    stopping = [d for port in ports if isinstance(d := port.stopListening(), Deferred)]
    return DeferredList(stopping) if stopping else None


#: Connections the kernel queues for us to accept (Twisted's default is 50). A fleet
#: powering on at once opens ~3 per machine within seconds; a full queue drops the
#: handshake and the client retries after 1, 3, 7... s (bench/RESULTS.md, "Boot storm":
#: 6,792 drops and 43 s for 1000 machines at 50). The kernel caps it at somaxconn.
BACKLOG = 4096


def ipv6_only_tcp_socket(port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``[::]:port`` for IPv6 alone."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DualStackTCPServer(Service):
    """Serves ``factory`` on ``port`` over IPv4 and ``factory6`` (default: the same) over
    IPv6, bound in ``privilegedStartService``. Without IPv6 on the host it serves IPv4
    alone, and says so once.

    :ivar factory: the IPv4 factory (named as on ``strports.service``'s service).
    :ivar factory6: the IPv6 factory.
    :ivar ports: the listening ports, IPv4 first.
    """

    _log = Logger()

    def __init__(self, port: int, factory: ServerFactory[Any], reactor: Any,
                 factory6: ServerFactory[Any] | None = None) -> None:
        self._port = port
        self.factory = factory
        self.factory6 = factory6 or factory
        self._reactor = reactor
        self.ports: list[Any] = []

    def privilegedStartService(self) -> None:
        v4 = self._reactor.listenTCP(self._port, self.factory, backlog=BACKLOG, interface="")
        self.ports = [v4]
        if IReactorSocket.providedBy(self._reactor):
            port = v4.getHost().port
            try:
                sock = ipv6_only_tcp_socket(port)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    v4.stopListening()
                    raise CannotListenError("::", port, e) from None
                self._log.warn("HTTP not on IPv6: {error}", error=e)
            else:
                try:
                    self.ports.append(self._reactor.adoptStreamPort(
                        sock.fileno(), socket.AF_INET6, self.factory6))
                finally:
                    sock.close()
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.ports:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        ports, self.ports = self.ports, []
        return stop_listening(ports)

"""Opening a transfer's UDP port (its TID): one plain socket, or a connected pair.

During a boot storm each transfer has one plain socket, and every ACK on it would be one
event of the reactor: Twisted wraps each in its logging context and reads the socket
until it is empty (a second, failing ``recvfrom`` per ACK), and a ``udp.Port`` costs a
log line and a delayed call to open and close (py-spy, a storm of 2,000: ~20 % of the
server's time in that dispatch, ~9 % in ``listenUDP``; bench/RESULTS.md, issue 18).
So the plain sockets live in one :class:`SessionSockets`: an ``epoll`` set of its own,
which the reactor watches as one descriptor (an epoll descriptor is readable while one
of its sockets is); one reactor event then reads one datagram from each socket that has
one (level-triggered: a second one waiting is found on the next turn).

A socket connected to the client is cheaper per datagram on Linux: the kernel keeps the
route for its sends and finds it without a full lookup for each ACK (early demux); on
loopback that is ~7 % of a lock-step transfer. But a connected socket never sees a
datagram from anyone else, and RFC 1350 wants those answered with error 5 (unknown
TID). So the connected socket shares its port (``SO_REUSEPORT``) with an unconnected
sibling: the kernel gives the client's datagrams to the connected one and everyone
else's to the sibling, which answers error 5.

The pair costs a second descriptor, so the listener asks for it only when the transfer
starts alone (the case where per-datagram cost is the whole story, see the session's
spin); during a boot storm each transfer has one plain socket. A reactor that cannot
adopt sockets (the tests' fake) or a kernel that refuses gets the plain socket too; a
reactor that cannot watch a descriptor (the fake), or a system without ``epoll``, gets a
``listenUDP`` port per transfer.
"""

from __future__ import annotations

import select
import socket
from contextlib import suppress
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorFDSet, IReactorSocket
from twisted.logger import Logger

from pxetwist.tftp.session import StrangerProtocol, TftpSession

#: Largest datagram read from a transfer's socket (a client sends ACKs and ERRORs).
READ_SIZE = 8192


def open_session_port(reactor: Any, interface: str, session: TftpSession,
                      connected: bool, plain: SessionSockets | None = None) -> None:
    """Listen for ``session`` on a new ephemeral port; its first packet goes out now.

    :param plain: where a plain socket goes; ``None``: a ``listenUDP`` port.
    """
    if connected and IReactorSocket.providedBy(reactor):
        try:
            _open_connected_pair(reactor, interface, session)
            return
        except OSError:
            pass
    if plain is not None:
        plain.open(interface, session)
    else:
        reactor.listenUDP(0, session, interface=interface)


class SessionSockets:
    """The plain transfer sockets, in one ``epoll`` set the reactor watches as one reader.

    The set (and its descriptor) exists while it holds a socket: the first one opened
    makes it and has the reactor watch it, the last one closed removes and closes it.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._epoll: Any = None
        self._ports: dict[int, SessionPort] = {}

    @staticmethod
    def usable(reactor: Any) -> bool:
        """Whether ``reactor`` can watch the set (a real reactor, on Linux)."""
        return IReactorFDSet.providedBy(reactor) and hasattr(select, "epoll")

    def open(self, interface: str, session: TftpSession) -> SessionPort:
        """A new socket on an ephemeral port of ``interface`` for ``session``, which starts
        now (its first packet goes out)."""
        family = socket.AF_INET6 if ":" in session.client[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((interface, 0))
            if self._epoll is None:
                self._epoll = select.epoll()
                self._reactor.addReader(self)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            sock.close()
            self._drop_epoll_if_empty()
            raise
        port = SessionPort(self, sock, session)
        self._ports[sock.fileno()] = port
        session.makeConnection(port)  # type: ignore[arg-type]  # the parts a session uses
        return port

    def close(self, port: SessionPort) -> None:
        """Stop watching ``port``'s socket and close it."""
        fd = port.socket.fileno()
        if self._ports.get(fd) is port:
            del self._ports[fd]
            self._epoll.unregister(fd)
        port.socket.close()
        self._drop_epoll_if_empty()

    def _drop_epoll_if_empty(self) -> None:
        if not self._ports and self._epoll is not None:
            self._reactor.removeReader(self)
            self._epoll.close()
            self._epoll = None

    # -- IReadDescriptor -------------------------------------------------------------

    def fileno(self) -> int:
        return self._epoll.fileno() if self._epoll is not None else -1

    def doRead(self) -> None:
        """One datagram from each socket that has one."""
        epoll = self._epoll
        if epoll is None:
            return
        ports = self._ports
        for fd, _ in epoll.poll(0):
            port = ports.get(fd)
            if port is not None:  # closed by a transfer handled earlier in this loop
                port.read()

    def connectionLost(self, reason: Any) -> None:
        """The reactor gave up on the set (it is shutting down): the sessions end with
        the service, which closes their sockets."""

    def logPrefix(self) -> str:
        return "TFTP transfers"


class SessionPort:
    """A transfer's socket in :class:`SessionSockets`: the session's transport (the parts
    of ``udp.Port`` a session uses)."""

    _log = Logger()

    def __init__(self, owner: SessionSockets, sock: socket.socket,
                 protocol: TftpSession) -> None:
        self.socket = sock
        self.protocol = protocol
        self._owner = owner
        self._open = True

    def read(self) -> None:
        """One datagram to the session. A read error (an ICMP error from the client's
        host, or nothing left to read) is a lost packet: the session's timer covers it."""
        try:
            data, addr = self.socket.recvfrom(READ_SIZE)
        except OSError:
            return
        try:
            self.protocol.datagramReceived(data, (addr[0], addr[1]))
        except Exception:
            self._log.failure("TFTP transfer to {client} failed", client=self.protocol.client)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send ``data`` to ``addr``; a send the kernel refuses is a lost packet."""
        with suppress(OSError):
            self.socket.sendto(data, addr)

    def getHost(self) -> IPv4Address | IPv6Address:
        host, port = self.socket.getsockname()[:2]
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("UDP", host, port)
        return IPv4Address("UDP", host, port)

    def stopListening(self) -> None:
        """Close the socket now (a ``udp.Port`` waits for the next reactor turn)."""
        if self._open:
            self._open = False
            self._owner.close(self)
            self.protocol.doStop()


def _reusable_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setblocking(False)
    return sock


def _open_connected_pair(reactor: Any, interface: str, session: TftpSession) -> None:
    family = socket.AF_INET6 if ":" in session.client[0] else socket.AF_INET
    stranger = _reusable_socket(family)
    own = _reusable_socket(family)
    try:
        stranger.bind((interface, 0))
        own.bind((interface, stranger.getsockname()[1]))
        own.connect(session.client)
        # adopting dups the descriptor; ours are closed on the way out
        session.sibling = reactor.adoptDatagramPort(stranger.fileno(), family,
                                                    StrangerProtocol(session))
        try:
            reactor.adoptDatagramPort(own.fileno(), family, session)
        except Exception:
            session.sibling.stopListening()
            session.sibling = None
            raise
    finally:
        stranger.close()
        own.close()

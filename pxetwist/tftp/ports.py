"""Opening a transfer's UDP port (its TID): one plain socket, or a connected pair.

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
adopt sockets (the tests' fake) or a kernel that refuses gets the plain socket too.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IReactorSocket

from pxetwist.tftp.session import StrangerProtocol, TftpSession


def open_session_port(reactor: Any, interface: str, session: TftpSession,
                      connected: bool) -> None:
    """Listen for ``session`` on a new ephemeral port; its first packet goes out now."""
    if connected and IReactorSocket.providedBy(reactor):
        try:
            _open_connected_pair(reactor, interface, session)
            return
        except OSError:
            pass
    reactor.listenUDP(0, session, interface=interface)


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

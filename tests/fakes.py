"""Test doubles shared by every protocol test.

``MemoryReactor`` has no ``listenUDP``; this module holds the one small fake UDP
reactor the suite uses: a :class:`twisted.internet.task.Clock` whose
``listenUDP`` returns ports that record what the protocol sends, so a test can
feed bytes into ``datagramReceived`` and read what came out.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.internet.task import Clock


class FakeUDPPort:
    """A bound UDP port: the protocol's transport. ``written`` holds ``(bytes, (host, port))``."""

    def __init__(self, reactor: FakeUDPReactor, port: int, protocol: AbstractDatagramProtocol,
                 interface: str) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.written: list[tuple[bytes, Any]] = []
        self.connected = True
        self.broadcast_allowed = False

    def write(self, data: bytes, addr: Any = None) -> None:
        if not self.connected:
            raise RuntimeError("write on a closed port")
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def setBroadcastAllowed(self, enabled: bool) -> None:
        self.broadcast_allowed = enabled

    def getBroadcastAllowed(self) -> bool:
        return self.broadcast_allowed

    def stopListening(self) -> None:
        if self.connected:
            self.connected = False
            self.reactor.ports.pop(self.port, None)
            self.protocol.doStop()

    loseConnection = stopListening

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        """Hand a datagram from ``addr`` to the protocol, as the reactor would."""
        self.protocol.datagramReceived(data, addr)

    def take(self) -> list[tuple[bytes, Any]]:
        """What was written since the last call, then forget it."""
        out, self.written = self.written, []
        return out


class FakeUDPReactor(Clock):
    """A Clock that can ``listenUDP``; ``ports`` maps port number -> :class:`FakeUDPPort`.

    Port 0 gets the next free number from 50000 up, like an ephemeral port.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, FakeUDPPort] = {}
        self._next_port = 50000

    def listenUDP(self, port: int, protocol: AbstractDatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        if port == 0:
            while self._next_port in self.ports:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        if port in self.ports:
            from twisted.internet.error import CannotListenError

            raise CannotListenError(interface, port, OSError("address in use"))
        bound = FakeUDPPort(self, port, protocol, interface)
        self.ports[port] = bound
        protocol.makeConnection(bound)
        return bound

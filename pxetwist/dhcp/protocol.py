"""The DHCP datagram protocol: decodes each datagram and hands the request to a
controller (:class:`~pxetwist.dhcp.server.DhcpServer` or
:class:`~pxetwist.dhcp.proxy.ProxyServer`) as ``controller.message_received(packet,
source)``, the way ``twisted.names``' ``DNSDatagramProtocol`` hands messages to its
controller. It decides nothing; garbage is dropped and counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import (
    BOOTREQUEST,
    DhcpPacket,
    DhcpPacketError,
    parse,
    peek_message_type,
)
from pxetwist.metrics import DHCP_DROPPED

Address = tuple[str, int]

#: DISCOVERs kept waiting behind the other messages, at most (beyond, the oldest is
#: dropped): see :class:`DhcpDatagramProtocol`. Room for a few hundred machines powered
#: on at once (one reactor turn reads up to 256 KiB of datagrams, ~850 DISCOVERs), and
#: a bound on how long one waits (~0.1 s of work).
DISCOVER_BACKLOG = 512
#: DISCOVERs answered per reactor turn, before the socket is read again.
DISCOVERS_PER_TURN = 32


class Controller(Protocol):
    """What a DHCP protocol hands its requests to."""

    def message_received(self, packet: DhcpPacket, source: Address,
                         arrived: float | None = None) -> None:
        """Handle one request; ``arrived``: when it was read, if it waited in the
        protocol's queue (``None``: now)."""


class DhcpDatagramProtocol(DatagramProtocol):
    """Decodes datagrams and hands them to ``controller.message_received(packet, addr)``;
    drops and counts garbage. Never lets an exception out of ``datagramReceived``.

    :ivar controller: set before the port opens (the controller needs :meth:`send`).
    :ivar packet_dumps: whether each datagram in and out gets a debug event. An event
        costs a few microseconds even when the log level drops it (four per DORA, ~10 %
        of the server's time in a DHCP storm), so ``twistd pxeboot`` turns them off
        unless ``--verbose``.

    With a ``clock``, DISCOVERs wait: every other message is handed on as it is read,
    DISCOVERs a few per reactor turn from a short queue (newest kept). When more
    clients come than the server can answer, a REQUEST finishes an exchange already
    begun while a DISCOVER only starts one; answering DISCOVERs first filled the socket
    with them, the REQUESTs of the clients offered an address were dropped, and the
    work spent on their offers was lost. Without load the queue is empty at each turn
    and a DISCOVER is answered in the turn it arrives. A DISCOVER waits as the bytes
    read (its type peeked, :func:`~pxetwist.dhcp.packet.peek_message_type`) and is
    decoded when its turn comes: one pushed out of a full queue costs no decoding.
    """

    noisy = False
    _log = Logger()

    def __init__(self, controller: Controller | None = None, packet_dumps: bool = True,
                 clock: Any = None) -> None:
        self.controller = controller
        self.packet_dumps = packet_dumps
        #: A controller's look at each datagram before it is decoded: ``True`` drops it
        #: (the controller counted it), e.g. the clients of a DHCP peer.
        self.screen: Callable[[bytes], bool] | None = None
        self._clock = clock
        self._discovers: deque[tuple[bytes, Address, float]] = deque()
        self._drain_call: Any = None

    def startProtocol(self) -> None:
        assert self.transport is not None
        self.transport.setBroadcastAllowed(True)

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        if self.packet_dumps:
            # Decoded only if the line is written: twisted.logger calls {summary()} when
            # it formats the event, never when debug is filtered out.
            self._log.debug("DHCP out to {addr[0]}:{addr[1]}: {summary()}", addr=addr,
                            summary=partial(_describe_datagram, data))
        try:
            self.transport.write(data, addr)
        except OSError as e:
            DHCP_DROPPED.labels(reason="send-failed").inc()
            self._log.warn("DHCP reply to {addr} not sent: {error}", addr=addr, error=e)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        if self.screen is not None:
            try:
                if self.screen(data):
                    return
            except Exception:
                DHCP_DROPPED.labels(reason="internal-error").inc()
                self._log.failure("DHCP datagram from {addr} not screened", addr=addr)
                return
        if self._clock is not None and self.controller is not None \
                and peek_message_type(data) == opt.DISCOVER:
            if len(self._discovers) >= DISCOVER_BACKLOG:
                self._discovers.popleft()
                DHCP_DROPPED.labels(reason="overload").inc()
            self._discovers.append((data, addr, self._clock.seconds()))
            if self._drain_call is None:
                self._drain_call = self._clock.callLater(0, self._drain)
            return
        packet = self._decoded(data, addr)
        if packet is not None and self.controller is not None:
            self._hand_on(packet, addr)

    def _decoded(self, data: bytes, addr: Address) -> DhcpPacket | None:
        """The request in ``data``; ``None`` (dropped and counted) if it is none."""
        try:
            packet = parse(data)
        except DhcpPacketError as e:
            DHCP_DROPPED.labels(reason="malformed").inc()
            self._log.debug("dropped malformed DHCP datagram from {addr}: {error}", addr=addr,
                            error=e)
            return None
        if self.packet_dumps:
            self._log.debug("DHCP in from {addr[0]}:{addr[1]}: {summary()}", addr=addr,
                            summary=partial(opt.describe, packet))
        if packet.op != BOOTREQUEST:
            DHCP_DROPPED.labels(reason="not-a-request").inc()
            return None
        return packet

    def _drain(self) -> None:
        """Answer up to :data:`DISCOVERS_PER_TURN` waiting DISCOVERs, oldest first."""
        self._drain_call = None
        for _ in range(min(DISCOVERS_PER_TURN, len(self._discovers))):
            data, addr, arrived = self._discovers.popleft()
            packet = self._decoded(data, addr)
            if packet is not None:
                self._hand_on(packet, addr, arrived)
        if self._discovers:
            self._drain_call = self._clock.callLater(0, self._drain)

    def _hand_on(self, packet: DhcpPacket, addr: Address, arrived: float | None = None
                 ) -> None:
        assert self.controller is not None
        try:
            self.controller.message_received(packet, addr, arrived)
        except Exception:
            DHCP_DROPPED.labels(reason="internal-error").inc()
            self._log.failure("DHCP message from {addr} failed", addr=addr)

    def stopProtocol(self) -> None:
        if self._drain_call is not None and self._drain_call.active():
            self._drain_call.cancel()
        self._drain_call = None
        self._discovers.clear()


def _describe_datagram(data: bytes) -> str:
    """:func:`~pxetwist.dhcp.options.describe` of a datagram we send."""
    try:
        return opt.describe(parse(data))
    except DhcpPacketError as e:
        return f"undecodable ({len(data)} bytes: {e})"

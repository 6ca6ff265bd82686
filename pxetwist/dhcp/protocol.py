"""The DHCP datagram protocol: decodes each datagram and hands the request to a
controller (:class:`~pxetwist.dhcp.server.DhcpServer` or
:class:`~pxetwist.dhcp.proxy.ProxyServer`) as ``controller.message_received(packet,
source)``, the way ``twisted.names``' ``DNSDatagramProtocol`` hands messages to its
controller. It decides nothing; garbage is dropped and counted.
"""

from __future__ import annotations

from functools import partial
from typing import Protocol

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacket, DhcpPacketError, parse
from pxetwist.metrics import DHCP_DROPPED

Address = tuple[str, int]


class Controller(Protocol):
    """What a DHCP protocol hands its requests to."""

    def message_received(self, packet: DhcpPacket, source: Address) -> None: ...


class DhcpDatagramProtocol(DatagramProtocol):
    """Decodes datagrams and hands them to ``controller.message_received(packet, addr)``;
    drops and counts garbage. Never lets an exception out of ``datagramReceived``.

    :ivar controller: set before the port opens (the controller needs :meth:`send`).
    :ivar packet_dumps: whether each datagram in and out gets a debug event. An event
        costs a few microseconds even when the log level drops it (four per DORA, ~10 %
        of the server's time in a DHCP storm), so ``twistd pxeboot`` turns them off
        unless ``--verbose``.
    """

    noisy = False
    _log = Logger()

    def __init__(self, controller: Controller | None = None, packet_dumps: bool = True) -> None:
        self.controller = controller
        self.packet_dumps = packet_dumps

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
        try:
            packet = parse(data)
        except DhcpPacketError as e:
            DHCP_DROPPED.labels(reason="malformed").inc()
            self._log.debug("dropped malformed DHCP datagram from {addr}: {error}", addr=addr,
                            error=e)
            return
        if self.packet_dumps:
            self._log.debug("DHCP in from {addr[0]}:{addr[1]}: {summary()}", addr=addr,
                            summary=partial(opt.describe, packet))
        if packet.op != BOOTREQUEST:
            DHCP_DROPPED.labels(reason="not-a-request").inc()
            return
        if self.controller is None:
            return
        try:
            self.controller.message_received(packet, addr)
        except Exception:
            DHCP_DROPPED.labels(reason="internal-error").inc()
            self._log.failure("DHCP message from {addr} failed", addr=addr)


def _describe_datagram(data: bytes) -> str:
    """:func:`~pxetwist.dhcp.options.describe` of a datagram we send."""
    try:
        return opt.describe(parse(data))
    except DhcpPacketError as e:
        return f"undecodable ({len(data)} bytes: {e})"

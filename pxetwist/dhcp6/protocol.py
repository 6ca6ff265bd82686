"""The DHCPv6 datagram protocol: decodes and hands each message to a controller."""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import Any, Protocol

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from pxetwist.dhcp6.packet import Dhcp6PacketError, Packet, parse
from pxetwist.metrics import DHCP_DROPPED

Address = tuple[str, int]


class Controller(Protocol):
    def message_received(self, packet: Packet, source: Address) -> None: ...


class Dhcp6DatagramProtocol(DatagramProtocol):
    """Moves bytes only: ``controller.message_received(packet, source)`` for each decoded
    datagram; garbage is dropped and counted; nothing escapes ``datagramReceived``.

    :param interface: the link's interface name: replies to link-local addresses need
        it as their scope (Twisted hands us addresses without one).
    """

    noisy = False
    _log = Logger()

    def __init__(self, controller: Controller | None = None, interface: str = "") -> None:
        self.controller = controller
        self.interface = interface

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None
        host = addr[0]
        if self.interface and "%" not in host and IPv6Address(host).is_link_local:
            host = f"{host}%{self.interface}"
        try:
            self.transport.write(data, (host, addr[1]))
        except OSError as e:
            DHCP_DROPPED.labels(reason="send-failed").inc()
            self._log.warn("DHCPv6 reply to {addr} not sent: {error}", addr=addr, error=e)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            packet = parse(data)
        except Dhcp6PacketError as e:
            DHCP_DROPPED.labels(reason="malformed").inc()
            self._log.debug("dropped malformed DHCPv6 datagram from {addr}: {error}",
                            addr=addr, error=e)
            return
        if self.controller is None:
            return
        try:
            self.controller.message_received(packet, (addr[0], addr[1]))
        except Dhcp6PacketError as e:
            DHCP_DROPPED.labels(reason="malformed").inc()
            self._log.debug("dropped DHCPv6 message from {addr}: {error}", addr=addr, error=e)
        except Exception:
            DHCP_DROPPED.labels(reason="internal-error").inc()
            self._log.failure("DHCPv6 message from {addr} failed", addr=addr)

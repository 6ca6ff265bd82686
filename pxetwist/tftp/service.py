"""The TFTP service: binds ``[tftp] address``:``port`` as root, serves until stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from pxetwist.config import Config
from pxetwist.events import EventBus
from pxetwist.tftp.files import FileResolver
from pxetwist.tftp.server import TftpServerProtocol


class TftpService(Service):
    """Owns the listening port and the running sessions.

    The port is bound in ``privilegedStartService`` (port 69 needs root), so
    ``twistd -u/-g`` can drop privileges afterwards.
    """

    name = "tftp"

    def __init__(self, protocol: TftpServerProtocol, port: int, interface: str,
                 reactor: Any) -> None:
        self.protocol = protocol
        self._port_number = port
        self._interface = interface
        self._reactor = reactor
        self._listening: Any = None

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
        self._listening = self._reactor.listenUDP(self._port_number, self.protocol,
                                                  interface=self._interface)
        super().privilegedStartService()

    def startService(self) -> None:
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.protocol.stop_sessions()
        if self._listening is not None:
            listening, self._listening = self._listening, None
            result: Deferred[None] | None = listening.stopListening()
            return result
        return None


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

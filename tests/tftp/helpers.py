"""A TFTP server on the fake UDP reactor, and a tiny scripted client for protocol tests."""

from __future__ import annotations

from pathlib import Path

from attrs import define

from pxetwist.config import TftpConfig, load_text
from pxetwist.events import EventBus
from pxetwist.tftp import packet
from pxetwist.tftp.files import FileResolver
from pxetwist.tftp.server import TftpServerProtocol
from tests.fakes import FakeUDPPort, FakeUDPReactor

CLIENT = ("10.0.0.5", 2000)


def tftp_config(tmp_path: Path, **keys: object) -> TftpConfig:
    (tmp_path / "root").mkdir(parents=True, exist_ok=True)
    (tmp_path / "catalog").mkdir(exist_ok=True)
    extra = "".join(f"{k} = {v}\n" for k, v in keys.items())
    text = f"[tftp]\nport = 69\nroot = root\n{extra}[catalog]\npaths = catalog\n"
    return load_text(text, tmp_path).tftp


@define
class Rig:
    """The listener bound on fake port 69, with helpers to talk to it."""

    reactor: FakeUDPReactor
    server: TftpServerProtocol
    listener: FakeUDPPort
    events: EventBus
    resolver: FileResolver

    def rrq(self, name: str, addr: tuple[str, int] = CLIENT, mode: str = "octet",
            **options: object) -> None:
        data = packet.encode_request(packet.RRQ, name, mode,
                                     {k: str(v) for k, v in options.items()})
        self.listener.deliver(data, addr)

    def session_port(self) -> FakeUDPPort:
        """The newest session's port."""
        ports = [p for n, p in self.reactor.ports.items() if n != 69]
        assert ports, "no session port is open"
        return ports[-1]

    def sent(self, port: FakeUDPPort) -> list[packet.Packet]:
        return [packet.parse(data) for data, _ in port.take()]


def make_rig(tmp_path: Path, files: dict[str, bytes] | None = None, **keys: object) -> Rig:
    config = tftp_config(tmp_path, **keys)
    for name, content in (files or {}).items():
        path = config.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    reactor = FakeUDPReactor()
    events = EventBus(reactor)
    resolver = FileResolver((config.root,))
    server = TftpServerProtocol(config, resolver, events, reactor)
    listener = reactor.listenUDP(69, server)
    return Rig(reactor, server, listener, events, resolver)

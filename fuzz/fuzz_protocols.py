"""atheris target: the DHCP (full and proxy) and TFTP protocols over a fake transport.

Each input is a script of steps: a datagram to DHCP port 67 or 4011 (full or
proxy mode), a TFTP request or a datagram to the newest transfer's port, or a
clock advance. Datagrams are either raw fuzz bytes or packets built from them
(real message types, a handful of MACs and pool addresses, fuzzed option
values), so the state machines are reached, not just the parsers. The
protocols' catch-alls are bypassed: controllers and sessions are called
directly, so any exception is a finding. Replies must parse, and no address
may be bound to two clients. State (a store on /dev/shm) is rebuilt every
:data:`_RESET` inputs. Run:
``python fuzz/fuzz_protocols.py -atheris_runs=1000000 fuzz/corpus/protocols``.
"""

from __future__ import annotations

import sys
import tempfile
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakes

with atheris.instrument_imports():
    from pxetwist.config import load_text
    from pxetwist.dhcp import options as opt
    from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacket, DhcpPacketError, encode, parse
    from pxetwist.dhcp.service import DhcpService
    from pxetwist.events import EventBus
    from pxetwist.store import Store
    from pxetwist.tftp import packet as tftp
    from pxetwist.tftp.files import FileResolver
    from pxetwist.tftp.server import TftpServerProtocol
    from tests.fakes import FakeUDPReactor

_RESET = 500
_SERVER = "10.77.0.1"
_MACS = [f"52:54:00:00:00:{i:02x}" for i in range(6)] + ["52:54:00:00:00:aa"]
_IPS = [f"10.77.0.{n}" for n in (1, 50, 99, 100, 101, 102, 103, 104, 200)] + ["0.0.0.0"]
_CODES = [opt.MESSAGE_TYPE, opt.REQUESTED_IP, opt.SERVER_ID, opt.CLIENT_ID, opt.CLIENT_ARCH,
          opt.VENDOR_CLASS, opt.USER_CLASS, opt.IPXE_ENCAP, opt.CLIENT_UUID, opt.PARAMETER_LIST,
          opt.VENDOR_SPECIFIC, opt.HOSTNAME, opt.RELAY_AGENT, opt.MAX_SIZE, opt.CLIENT_NDI, 52]
_NAMES = ["f", "big", "sub/n.txt", "missing", "../etc/passwd", "/f", "\\big"]
_OPTIONS = ["blksize", "tsize", "timeout", "windowsize", "multicast", "BLKSIZE"]


class _Rig:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pxetwist-fuzz-proto-", dir=_tmp()))
        for name in ("tftproot/sub", "catalog"):
            (self.folder / name).mkdir(parents=True)
        root = self.folder / "tftproot"
        (root / "f").write_bytes(bytes(range(256)) * 8)
        (root / "big").write_bytes(b"b" * 70_000)
        (root / "sub" / "n.txt").write_bytes(b"line\nline\r\n" * 40)
        text = (f"[server]\naddress = {_SERVER}\n[dhcp]\nmode = full\n"
                "range_start = 10.77.0.100\nrange_end = 10.77.0.103\nlease_time = 60\n"
                "[dhcp.reservations]\n52:54:00:00:00:aa = 10.77.0.50\n"
                "[tftp]\nroot = tftproot\nmax_sessions = 4\nmax_sessions_per_client = 2\n"
                "stall_timeout = 30\n[catalog]\npaths = catalog\n")
        self.reactor = FakeUDPReactor()
        self.reactor.advance(1_000_000)
        events = EventBus(self.reactor)
        self.store = Store(self.folder / "state.sqlite")
        full = load_text(text, self.folder)
        proxy = load_text(text.replace("mode = full", "mode = proxy"), self.folder)
        self.full = DhcpService(full, self.store, events, self.reactor, _SERVER,
                                "http://10.77.0.1:8080")
        self.full.privilegedStartService()
        controller = self.full.main_controller
        controller.send = _checked_send(self, controller.send)
        self.ports = dict(self.reactor.ports)  # 67 and 4011 of full mode
        self.reactor.ports.clear()
        self.proxy = DhcpService(proxy, self.store, events, self.reactor, _SERVER,
                                 "http://10.77.0.1:8080")
        self.proxy.privilegedStartService()
        self.proxy_ports = dict(self.reactor.ports)
        self.reactor.ports.clear()
        self.tftp = TftpServerProtocol(full.tftp, FileResolver((full.tftp.root,)), events,
                                       self.reactor)
        self.listener = self.reactor.listenUDP(69, self.tftp)

    def close(self) -> None:
        self.tftp.stop_sessions()
        self.store.close()


def _tmp() -> str:
    return "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()


_state: dict[str, Any] = {"rig": None, "count": 0}


def _rig() -> _Rig:
    if _state["rig"] is None or _state["count"] >= _RESET:
        if _state["rig"] is not None:
            _state["rig"].close()
        _state["rig"], _state["count"] = _Rig(), 0
    _state["count"] += 1
    rig: _Rig = _state["rig"]
    return rig


def _dhcp_packet(fdp: Any) -> bytes:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)))
    mac = _MACS[fdp.ConsumeIntInRange(0, len(_MACS) - 1)]
    options: list[tuple[int, bytes]] = [(opt.MESSAGE_TYPE, bytes([fdp.ConsumeIntInRange(1, 9)]))]
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        code = _CODES[fdp.ConsumeIntInRange(0, len(_CODES) - 1)]
        if code in (opt.REQUESTED_IP, opt.SERVER_ID) and fdp.ConsumeBool():
            value = IPv4Address(_IPS[fdp.ConsumeIntInRange(0, len(_IPS) - 1)]).packed
        else:
            value = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 40))
        options.append((code, value))
    packet = DhcpPacket(
        op=BOOTREQUEST, xid=fdp.ConsumeIntInRange(0, 3), flags=fdp.ConsumeIntInRange(0, 1) << 15,
        chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10,
        ciaddr=IPv4Address(_IPS[fdp.ConsumeIntInRange(0, len(_IPS) - 1)]) if fdp.ConsumeBool()
        else IPv4Address(0),
        giaddr=IPv4Address("10.77.0.254") if fdp.ConsumeIntInRange(0, 7) == 0 else IPv4Address(0),
        options=options)
    return encode(packet)


def _tftp_request(fdp: Any) -> bytes:
    if fdp.ConsumeIntInRange(0, 7) == 0:
        return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    name = _NAMES[fdp.ConsumeIntInRange(0, len(_NAMES) - 1)]
    mode = ["octet", "netascii", "mail"][fdp.ConsumeIntInRange(0, 2)]
    options = {}
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        options[_OPTIONS[fdp.ConsumeIntInRange(0, len(_OPTIONS) - 1)]] = \
            fdp.ConsumeUnicodeNoSurrogates(6).encode("latin-1", "replace").decode("latin-1") \
            if fdp.ConsumeBool() else str(fdp.ConsumeIntInRange(0, 70000))
    return tftp.encode_request(tftp.RRQ if fdp.ConsumeIntInRange(0, 7) else tftp.WRQ, name,
                               mode, options)


def _check_replies(port: Any) -> None:
    for data, _ in port.take():
        parse(data)  # a reply we cannot parse ourselves is a finding


def _deliver_dhcp(ports: dict[int, Any], service: DhcpService, boot: bool, data: bytes) -> None:
    try:
        request = parse(data)
    except DhcpPacketError:
        return
    if request.op != BOOTREQUEST:
        return
    controller = service.boot_controller if boot else service.main_controller
    controller.message_received(request, ("10.77.0.254", 67) if request.giaddr != IPv4Address(0)
               else ("0.0.0.0", 68))
    for port in ports.values():
        _check_replies(port)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    rig = _rig()
    client = ("10.0.0.5", 2000 + fdp.ConsumeIntInRange(0, 2))
    for _ in range(fdp.ConsumeIntInRange(1, 24)):
        if fdp.remaining_bytes() == 0:
            break
        step = fdp.ConsumeIntInRange(0, 7)
        if step in (0, 1):
            _deliver_dhcp(rig.ports, rig.full, step == 1, _dhcp_packet(fdp))
        elif step == 2:
            _deliver_dhcp(rig.proxy_ports, rig.proxy, fdp.ConsumeBool(), _dhcp_packet(fdp))
        elif step == 3:
            try:
                request = tftp.parse(_tftp_request(fdp))
            except tftp.TftpPacketError:
                continue
            if isinstance(request, tftp.Request):
                rig.tftp._request(request, client, rig.listener)
            rig.listener.take()
        elif step in (4, 5):
            sessions = [p for n, p in rig.reactor.ports.items() if n != 69]
            if not sessions:
                continue
            port = sessions[fdp.ConsumeIntInRange(0, len(sessions) - 1)]
            if step == 4:
                payload = tftp.encode_ack(fdp.ConsumeIntInRange(0, 70000))
            else:
                payload = bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20)))
            source = client if fdp.ConsumeIntInRange(0, 7) else ("10.0.0.6", 9)
            port.deliver(payload, source)
            port.take()
        else:
            rig.reactor.advance(fdp.ConsumeIntInRange(0, 2000) / 100)
            for ports in (rig.ports, rig.proxy_ports):
                for port in ports.values():
                    _check_replies(port)


def _checked_send(rig: _Rig, send: Any) -> Any:
    """Full mode's send, checking each ACK: its address is not held by another client."""

    def check(data: bytes, addr: Any) -> None:
        reply = parse(data)
        pool = rig.full.pool
        assert pool is not None
        if opt.message_type(reply) == opt.ACK and reply.yiaddr != IPv4Address(0):
            holder = pool.holder(str(reply.yiaddr))
            if holder is not None and holder.mac != reply.mac:
                raise AssertionError(f"ACK of {reply.yiaddr} to {reply.mac} while "
                                     f"{holder.mac} holds it")
        send(data, addr)

    return check


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

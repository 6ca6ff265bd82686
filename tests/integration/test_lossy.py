"""Lossy links (this kernel has no netem): pxetwist behind bench/udp_relay.py with 10 %
seeded loss each way, plus duplication and reordering.

TFTP: curl (blksize 512 and 1432; loss and reordering, see the fixture for why not
duplication) and a windowed client (RFC 7440, written here; loss, duplication and
reordering) fetch files through the relays; every sha256 matches. DHCP: clients acting as a relay agent
(giaddr) run DORA through two relays (requests one way, replies the other), retrying on
silence like real clients; every one completes. All traffic is unicast on 127.0.0.x.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from attrs import evolve

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import DhcpPacketError, parse
from pxetwist.tftp import packet as tftp
from tests.dhcp.clients import plain, requested, server_id, wire
from tests.integration.test_twistd import free_port, twistd, wait_for

REPO = Path(__file__).resolve().parents[2]
LOSS = "0.1"
DUP = "0.05"
REORDER = "0.05"

pytestmark = pytest.mark.integration


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def started(argv: list[str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """A helper process that prints ``ready`` when listening; ended by its PID. Its output
    is read all along (a full pipe would block its logging, and so the process)."""
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = None
    try:
        assert process.stdout is not None
        for _ in range(50):  # log lines may come first
            line = process.stdout.readline()
            if not line or line.startswith(ready):
                break
            lines.append(line)
        assert line.startswith(ready), lines
        process.ready_line = line  # type: ignore[attr-defined]
        process.output_lines = lines  # type: ignore[attr-defined]
        stream = process.stdout
        reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
        reader.start()
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if reader is not None:
            reader.join(timeout=10)
        counts = [line for line in lines if line.startswith("forwarded")]
        if counts:
            print(f"\nrelay {argv[argv.index('--listen') + 1]}: {counts[-1].strip()}")


def relay(listen: str, server: str, seed: int, dup: str = DUP) -> list[str]:
    return [sys.executable, str(REPO / "bench" / "udp_relay.py"), "--listen", listen,
            "--server", server, "--delay-ms", "1", "--loss", LOSS, "--dup", dup,
            "--reorder", REORDER, "--seed", str(seed)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- TFTP ---------------------------------------------------------------------------------

FILES = {"a.bin": 256 * 1024 + 77, "b.bin": 1432 * 120, "c.bin": 512 * 300}


@pytest.fixture(scope="module")
def lossy_tftp(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[int, int, Path, list[str]]]:
    """pxetwist's TFTP service on 127.0.0.1 behind two lossy relays (loss and reordering,
    and loss, reordering and duplication): (their ports, root, the server's log so far).

    curl gets the relay without duplication: a copy of the OACK that arrives after DATA 1
    makes curl start over at block 1 and ignore the transfer until it times out (its
    weakness, as atftp's abort on a repeated OACK is; LAB-NOTES)."""
    root = tmp_path_factory.mktemp("lossy-root")
    rng = random.Random(10)
    for name, size in FILES.items():
        (root / name).write_bytes(rng.randbytes(size))
    with started([sys.executable, str(REPO / "bench" / "tftp_server.py"), str(root)],
                 "READY ") as server:
        port = int(server.ready_line.split()[1])  # type: ignore[attr-defined]
        plain_port, dup_port = free_udp_port(), free_udp_port()
        with started(relay(f"127.0.0.1:{plain_port}", f"127.0.0.1:{port}", 11, dup="0"),
                     "READY"), \
                started(relay(f"127.0.0.1:{dup_port}", f"127.0.0.1:{port}", 14), "READY"):
            yield plain_port, dup_port, root, server.output_lines  # type: ignore[attr-defined]


@pytest.mark.parametrize("blksize", [512, 1432])
@pytest.mark.parametrize("name", sorted(FILES))
def test_curl_through_loss_and_reordering(
        lossy_tftp: tuple[int, int, Path, list[str]], tmp_path: Path, name: str,
        blksize: int) -> None:
    """curl gets every file whole through 10 % loss and reordering."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    port, _, root, log = lossy_tftp
    out = tmp_path / "out"
    result = subprocess.run(["curl", "-sS", "--max-time", "120", "--tftp-blksize",
                             str(blksize), f"tftp://127.0.0.1:{port}/{name}", "-o", str(out)],
                            capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, (result.stderr, "".join(log[-20:]))
    assert sha256(out.read_bytes()) == sha256((root / name).read_bytes())


def windowed_get(port: int, name: str, blksize: int, window: int, seconds: float = 60
                 ) -> tuple[bytes, int]:
    """An RFC 7440 client: ACKs the last in-order block of each window, re-ACKs on
    silence (50 ms), ignores duplicates. :returns: (content, retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        request = tftp.encode_request(tftp.RRQ, name, "octet",
                                      {"blksize": str(blksize), "windowsize": str(window)})
        server = ("127.0.0.1", port)
        sock.sendto(request, server)
        blocks: list[bytes] = []
        started_ = False
        retries = 0
        in_window = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data, server = sock.recvfrom(70000)
            except TimeoutError:
                retries += 1
                sock.sendto(tftp.encode_ack(len(blocks)) if started_ else request, server)
                continue
            message = tftp.parse(data)
            if isinstance(message, tftp.OAck):
                started_ = True
                if not blocks:
                    sock.sendto(tftp.encode_ack(0), server)
                continue
            assert isinstance(message, tftp.Data), message
            started_ = True
            if message.block == (len(blocks) + 1) & 0xFFFF:
                blocks.append(message.payload)
                in_window += 1
                last = len(message.payload) < blksize
                if in_window >= window or last:
                    in_window = 0
                    sock.sendto(tftp.encode_ack(len(blocks)), server)
                if last:
                    return b"".join(blocks), retries
            else:  # a gap or a duplicate: say where we are, the server resends from there
                in_window = 0
                sock.sendto(tftp.encode_ack(len(blocks)), server)
        raise AssertionError(f"{name} not complete in {seconds} s")


@pytest.mark.parametrize(("name", "window"), [("a.bin", 8), ("b.bin", 16), ("c.bin", 4)])
def test_windowed_client_through_loss_duplication_and_reordering(
        lossy_tftp: tuple[int, int, Path, list[str]], name: str, window: int) -> None:
    """RFC 7440 windows recover from loss, duplicates and reordering: the sha256 matches."""
    _, port, root, _ = lossy_tftp
    content, retries = windowed_get(port, name, 1432, window)
    print(f"{name} window {window}: {retries} client retries")
    assert sha256(content) == sha256((root / name).read_bytes())


# -- DHCP ---------------------------------------------------------------------------------

AGENT = "127.0.0.3"  # the relay agent address (giaddr); the reply relay listens on :67


@pytest.fixture(scope="module")
def lossy_dhcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """Full-mode pxetwist (twistd) on a high port; requests reach it through one lossy
    relay, its replies (to giaddr:67) come back through another. (request relay port,
    reply destination port the clients listen on)."""
    if os.geteuid() != 0:
        pytest.skip("the reply relay listens on port 67 (giaddr:67), which needs root")
    folder = tmp_path_factory.mktemp("lossy-dhcp")
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir()
    dhcp_port, http_port = free_udp_port(), free_port()
    (folder / "pxe.ini").write_text(
        "[server]\naddress = 10.77.0.1\nstate = state.sqlite\n"
        f"[dhcp]\nmode = full\nport = {dhcp_port}\nproxy_port = {free_udp_port()}\n"
        "range_start = 10.77.0.100\nrange_end = 10.77.0.250\n"
        "[tftp]\nenabled = no\nroot = tftproot\n"
        f"[http]\nport = {http_port}\ninterface = 127.0.0.1\n[catalog]\npaths = catalog\n")
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(twistd("pxeboot", "--config", str(folder / "pxe.ini")),
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{http_port}/health", process)
        clients_port = free_udp_port()
        request_relay = free_udp_port()
        with started(relay(f"127.0.0.1:{request_relay}", f"127.0.0.1:{dhcp_port}", 12),
                     "READY"), \
                started(relay(f"{AGENT}:67", f"127.0.0.1:{clients_port}", 13), "READY"):
            yield request_relay, clients_port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        log.close()


def exchange(sock: socket.socket, relay_port: int, message: bytes, xid: int,
             kinds: tuple[int, ...], tries: int = 20) -> tuple[object, int]:
    """Send until an answer of one of ``kinds`` for ``xid`` comes: (reply, sends)."""
    for attempt in range(1, tries + 1):
        sock.sendto(message, ("127.0.0.1", relay_port))
        deadline = time.monotonic() + 0.2
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break
            try:
                reply = parse(data)
            except DhcpPacketError:
                continue
            if reply.xid == xid and opt.message_type(reply) in kinds:
                return reply, attempt
    raise AssertionError(f"no answer to xid {xid:#x} after {tries} tries")


def test_dhcp_dora_completes_through_ten_percent_loss(lossy_dhcp: tuple[int, int]) -> None:
    """100 clients run DORA through 10 % loss each way (plus duplicates and reordering),
    retrying every 200 ms: every one is ACKed, no address twice."""
    relay_port, clients_port = lossy_dhcp
    acked: dict[str, str] = {}
    sends = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", clients_port))
        for i in range(100):
            mac = f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"
            xid = 0x5000 + i
            discover = evolve(plain(opt.DISCOVER, mac=mac), xid=xid,
                              giaddr=IPv4Address(AGENT))
            offer, n = exchange(sock, relay_port, wire(discover), xid, (opt.OFFER,))
            sends += n
            request = evolve(plain(opt.REQUEST, mac=mac, options=[
                server_id("10.77.0.1"), requested(str(offer.yiaddr))]),  # type: ignore[attr-defined]
                xid=xid, giaddr=IPv4Address(AGENT))
            ack, n = exchange(sock, relay_port, wire(request), xid, (opt.ACK, opt.NAK))
            sends += n
            assert opt.message_type(ack) == opt.ACK  # type: ignore[arg-type]
            acked[mac] = str(ack.yiaddr)  # type: ignore[attr-defined]
    print(f"100 DORAs through 10 % loss: {sends} sends for 200 messages")
    assert len(acked) == 100 and len(set(acked.values())) == 100

"""Real TFTP clients (curl, atftp, tftp-hpa) against pxetwist on loopback; sha256 compared."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def tftp_server_process(root: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """bench/tftp_server.py serving ``root`` on 127.0.0.1: the process and its port,
    once it says READY; stopped with SIGTERM on the way out."""
    process = subprocess.Popen([sys.executable, str(REPO / "bench" / "tftp_server.py"),
                                str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), line
        yield process, int(line.split()[1])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """pxetwist's TFTP service in its own process on 127.0.0.1, serving a folder of files."""
    root = tmp_path_factory.mktemp("tftproot")
    (root / "small.bin").write_bytes(os.urandom(74 * 1024))
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    (root / "exact.bin").write_bytes(os.urandom(1432 * 64))
    (root / "text.txt").write_bytes(b"line one\nline two\r\nend\n")
    (root / "edges.txt").write_bytes(bytes(b"\r\n\n\rab\0"[c % 7] if c % 3 else c
                                           for c in os.urandom(300 * 1024)))
    with tftp_server_process(root) as (_, port):
        yield port, root


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (.ci/run installs it)")


@pytest.mark.parametrize("name", ["small.bin", "big.bin", "exact.bin"])
@pytest.mark.parametrize("blksize", [512, 1432])
def test_curl(server: tuple[int, Path], tmp_path: Path, name: str, blksize: int) -> None:
    """curl tftp:// downloads the exact bytes with blksize 512 and 1432."""
    need("curl")
    port, root = server
    out = tmp_path / "out"
    subprocess.run(["curl", "-sS", "--max-time", "60", "--tftp-blksize", str(blksize),
                    f"tftp://127.0.0.1:{port}/{name}", "-o", str(out)], check=True, timeout=90)
    assert sha256(out) == sha256(root / name)


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
def test_atftp_windowsize(server: tuple[int, Path], tmp_path: Path, name: str) -> None:
    """atftp with windowsize 16 and blksize 1468 downloads the exact bytes."""
    need("atftp")
    port, root = server
    out = tmp_path / "out"
    subprocess.run(["atftp", "--option", "windowsize 16", "--option", "blksize 1468",
                    "--option", "tsize 0", "-g", "-r", name, "-l", str(out), "127.0.0.1",
                    str(port)], check=True, timeout=90, capture_output=True)
    assert sha256(out) == sha256(root / name)


def test_tftp_hpa(server: tuple[int, Path], tmp_path: Path) -> None:
    """tftp-hpa's client (plain 512-byte lock-step) downloads the exact bytes."""
    need("tftp")
    port, root = server
    out = tmp_path / "out"
    subprocess.run(["tftp", "127.0.0.1", str(port), "-m", "binary", "-c", "get", "small.bin",
                    str(out)], check=True, timeout=90, capture_output=True)
    assert sha256(out) == sha256(root / "small.bin")


@pytest.mark.parametrize("name", ["text.txt", "edges.txt"])
def test_tftp_hpa_netascii(server: tuple[int, Path], tmp_path: Path, name: str) -> None:
    """tftp-hpa in ascii mode gets the text back with local line ends; edges.txt is 300 KB
    of random bytes dense with CR, LF and NUL, so CR LF and CR NUL pairs fall on 512-byte
    block edges of the streamed conversion (issue 13 item 2)."""
    need("tftp")
    port, root = server
    out = tmp_path / "out"
    subprocess.run(["tftp", "127.0.0.1", str(port), "-m", "ascii", "-c", "get", name,
                    str(out)], check=True, timeout=90, capture_output=True)
    assert sha256(out) == sha256(root / name)


def test_missing_file_fails_cleanly(server: tuple[int, Path], tmp_path: Path) -> None:
    """curl gets TFTP error 1 (its exit 68, CURLE_TFTP_NOTFOUND) for a missing file."""
    need("curl")
    port, _ = server
    result = subprocess.run(["curl", "-sS", f"tftp://127.0.0.1:{port}/nope", "-o",
                             str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 68  # CURLE_TFTP_NOTFOUND: the server answered ERROR 1


def _descriptors(pid: int) -> list[str]:
    """What each open descriptor of process ``pid`` is (``socket:[…]``, a path, …), but
    pipes: the reactor's wakers, made when it starts running (which may be after READY)."""
    fds = Path(f"/proc/{pid}/fd")
    names = []
    for fd in fds.iterdir():
        try:
            name = os.readlink(fd)
        except FileNotFoundError:  # closed while listing
            continue
        if not name.startswith("pipe:"):
            names.append(name)
    return sorted(names)


def test_a_storm_of_transfers_gets_the_exact_bytes_and_frees_every_descriptor(
        tmp_path: Path) -> None:
    """Thirty curl downloads at once (their sockets share one epoll set, see
    pxetwist.tftp.ports.SessionSockets) each get the exact bytes; afterwards the server
    holds the descriptors it held before (no socket, no epoll set, no file left open)."""
    need("curl")
    root = tmp_path / "root"
    root.mkdir()
    (root / "small.bin").write_bytes(os.urandom(74 * 1024))
    (root / "large.bin").write_bytes(os.urandom(9 * 1024 * 1024 + 5))  # read, not cached
    with tftp_server_process(root) as (process, port):
        before = _descriptors(process.pid)
        names = ["large.bin" if i % 10 == 0 else "small.bin" for i in range(30)]
        outs = [tmp_path / f"out{i}" for i in range(len(names))]
        curls = [subprocess.Popen(["curl", "-sS", "--max-time", "60", "--tftp-blksize", "1432",
                                   f"tftp://127.0.0.1:{port}/{name}", "-o", str(out)])
                 for name, out in zip(names, outs, strict=True)]
        assert [curl.wait(timeout=90) for curl in curls] == [0] * len(curls)
        for name, out in zip(names, outs, strict=True):
            assert sha256(out) == sha256(root / name)
        deadline = time.monotonic() + 5
        while (now := _descriptors(process.pid)) != before:  # closed at the last ACK
            assert time.monotonic() < deadline, (sorted(set(now) - set(before)),
                                                 sorted(set(before) - set(now)))
            time.sleep(0.05)


def _remote_ports_on(port: int) -> list[int]:
    """The peer port of each UDP socket bound to ``port`` here (0: not connected)."""
    remotes = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.split(":")[1], 16) == port:
            remotes.append(int(remote.split(":")[1], 16))
    return sorted(remotes)


def _lock_step_download(sock: socket.socket, port: int, name: str,
                        stranger: socket.socket | None = None
                        ) -> tuple[bytes, int, list[int]]:
    """Fetch ``name`` lock-step with blksize 1432; with ``stranger``, a third party sends an
    ACK to the transfer's port after the first block and must get error 5 back. Returns the
    bytes, the transfer's port and the peer ports of the server's sockets on it."""
    sock.settimeout(5)
    sock.sendto(b"\0\1" + name.encode() + b"\0octet\0blksize\0" + b"1432\0", ("127.0.0.1", port))
    reply, tid = sock.recvfrom(2048)
    assert reply[:2] == b"\0\6", reply  # OACK
    sock.sendto(b"\0\4\0\0", tid)
    received = b""
    expected = 1
    sockets: list[int] = []
    while True:
        data, addr = sock.recvfrom(2048)
        assert addr == tid
        if expected > 1 and data[:4] == b"\0\3" + ((expected - 1) & 0xFFFF).to_bytes(2, "big"):
            continue  # the previous block again: resent on the server's timer (a slow turn)
        assert data[:2] == b"\0\3" and int.from_bytes(data[2:4], "big") == expected & 0xFFFF
        received += data[4:]
        if expected == 1:
            sockets = _remote_ports_on(tid[1])
        if stranger is not None and expected == 1:
            stranger.settimeout(5)
            stranger.sendto(b"\0\4\0\1", tid)
            error, from_addr = stranger.recvfrom(2048)
            assert from_addr == tid
            assert error[:4] == b"\0\5\0\5", error  # ERROR, unknown transfer ID
        sock.sendto(b"\0\4" + (expected & 0xFFFF).to_bytes(2, "big"), tid)
        if len(data) - 4 < 1432:
            return received, tid[1], sockets
        expected += 1


def test_unknown_tid_on_real_sockets_gets_error_5_and_the_transfer_goes_on(
        server: tuple[int, Path]) -> None:
    """A lone transfer runs on a socket connected to its client (pxetwist.tftp.ports), with
    a sibling on the same port for everyone else; a second transfer started beside it has a
    plain socket. Both answer a stranger with error 5, finish with the exact bytes, and
    leave their port free."""
    port, root = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as second, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for sock in (first, second, stranger):
            sock.bind(("127.0.0.1", 0))
        data, first_port, sockets = _lock_step_download(first, port, "exact.bin", stranger)
        assert data == (root / "exact.bin").read_bytes()
        assert sockets == [0, first.getsockname()[1]]  # the sibling and the connected one
        # a long transfer in the background (its ACKs sent by hand), then a second one
        first.sendto(b"\0\1big.bin\0octet\0", ("127.0.0.1", port))
        block1, big_tid = first.recvfrom(2048)
        assert block1[:4] == b"\0\3\0\1"
        data, second_port, sockets = _lock_step_download(second, port, "small.bin", stranger)
        assert data == (root / "small.bin").read_bytes()
        assert sockets == [0]  # one plain socket
        first.sendto(b"\0\5\0\0stop\0", big_tid)  # the client gives up: the session ends
    for used in (first_port, second_port):
        deadline = time.monotonic() + 5
        while True:  # the server closes the ports once the last ACK is in: a moment later
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind(("127.0.0.1", used))
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {used} is still open"
                time.sleep(0.05)
            finally:
                probe.close()

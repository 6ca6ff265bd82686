"""TFTP over IPv6 on loopback: an empty ``[tftp] address`` serves both families from one
port number, an IPv6 address serves that one; real clients (curl) get the exact bytes,
windowed and lock-step, and the connected fast path works on IPv6 too."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
    pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host"),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start(root: Path, address: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, str(REPO / "bench" / "tftp_server.py"),
                                str(root), "--address", address], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("READY "), line
    return process, int(line.split()[1])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tftproot6")
    (folder / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 77))
    return folder


@pytest.fixture(scope="module", params=["", "::1"])
def server(request: pytest.FixtureRequest, root: Path) -> Iterator[tuple[str, int]]:
    """The TFTP service alone, on both families (``""``) or on ``::1`` only."""
    process, port = start(root, request.param)
    try:
        yield request.param, port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


@pytest.mark.parametrize("blksize", [512, 1432])
def test_curl_over_ipv6(server: tuple[str, int], root: Path, tmp_path: Path,
                        blksize: int) -> None:
    """curl tftp://[::1]:port/ downloads the exact bytes."""
    _, port = server
    out = tmp_path / "out"
    subprocess.run(["curl", "-sS", "--max-time", "60", "--tftp-blksize", str(blksize),
                    f"tftp://[::1]:{port}/big.bin", "-o", str(out)], check=True, timeout=90)
    assert sha256(out) == sha256(root / "big.bin")


def test_ipv4_still_served_beside_ipv6(server: tuple[str, int], root: Path,
                                       tmp_path: Path) -> None:
    """With an empty address, the same port number serves IPv4 clients too; with an IPv6
    address, IPv4 is not served."""
    address, port = server
    out = tmp_path / "out"
    done = subprocess.run(["curl", "-sS", "--max-time", "5", f"tftp://127.0.0.1:{port}/big.bin",
                           "-o", str(out)], timeout=30, capture_output=True)
    if address:
        assert done.returncode != 0
    else:
        assert done.returncode == 0, done.stderr
        assert sha256(out) == sha256(root / "big.bin")


def test_missing_file_is_refused_over_ipv6(server: tuple[str, int]) -> None:
    """A refusal (error 1) reaches an IPv6 client from the listening port."""
    _, port = server
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"\0\1nope.bin\0octet\0", ("::1", port))
        data, addr = sock.recvfrom(600)
    assert data[:4] == b"\0\5\0\1" and addr[1] == port


def test_concurrent_transfers_over_ipv6(server: tuple[str, int], root: Path,
                                        tmp_path: Path) -> None:
    """Transfers started together share one epoll set (pxetwist.tftp.ports.SessionSockets);
    over IPv6 each still gets the exact bytes."""
    _, port = server
    outs = [tmp_path / f"out{i}" for i in range(4)]
    curls = [subprocess.Popen(["curl", "-sS", "--max-time", "60", "--tftp-blksize", "1432",
                               f"tftp://[::1]:{port}/big.bin", "-o", str(out)])
             for out in outs]
    assert [curl.wait(timeout=90) for curl in curls] == [0] * len(outs)
    assert {sha256(out) for out in outs} == {sha256(root / "big.bin")}

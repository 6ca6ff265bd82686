"""Real TFTP clients (curl, atftp, tftp-hpa) against pxetwist on loopback; sha256 compared."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """pxetwist's TFTP service in its own process on 127.0.0.1, serving a folder of files."""
    root = tmp_path_factory.mktemp("tftproot")
    (root / "small.bin").write_bytes(os.urandom(74 * 1024))
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    (root / "exact.bin").write_bytes(os.urandom(1432 * 64))
    (root / "text.txt").write_bytes(b"line one\nline two\r\nend\n")
    process = subprocess.Popen([sys.executable, str(REPO / "bench" / "tftp_server.py"),
                                str(root)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY "), line
        yield int(line.split()[1]), root
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


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


def test_tftp_hpa_netascii(server: tuple[int, Path], tmp_path: Path) -> None:
    """tftp-hpa in ascii mode gets the text back with local line ends."""
    need("tftp")
    port, root = server
    out = tmp_path / "out"
    subprocess.run(["tftp", "127.0.0.1", str(port), "-m", "ascii", "-c", "get", "text.txt",
                    str(out)], check=True, timeout=90, capture_output=True)
    assert out.read_bytes() == (root / "text.txt").read_bytes()


def test_missing_file_fails_cleanly(server: tuple[int, Path], tmp_path: Path) -> None:
    """curl gets TFTP error 1 (its exit 68, CURLE_TFTP_NOTFOUND) for a missing file."""
    need("curl")
    port, _ = server
    result = subprocess.run(["curl", "-sS", f"tftp://127.0.0.1:{port}/nope", "-o",
                             str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 68  # CURLE_TFTP_NOTFOUND: the server answered ERROR 1

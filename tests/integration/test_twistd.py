"""The real `twistd -n pxeboot` process: starts, answers, drops root, exits on bad config."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def twistd(*args: str) -> list[str]:
    """The command line of `twistd -n` with this Python (whatever is on PATH)."""
    return [*TWISTD, "-n", "--pidfile=", *args]


def write_config(folder: Path, http_port: int) -> Path:
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(exist_ok=True)
    (folder / "catalog" / "hello.ipxe").write_text("#!ipxe\necho hello\n")
    config = folder / "pxe.ini"
    config.write_text(
        "[server]\naddress = 127.0.0.1\nstate = var/state.sqlite\n"
        "[dhcp]\nmode = off\n[tftp]\nenabled = no\nroot = tftproot\n"
        f"[http]\nport = {http_port}\ninterface = 127.0.0.1\n[catalog]\npaths = catalog\n"
    )
    return config


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 20) -> bytes:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"twistd exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body: bytes = response.read()
                return body
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes to end (by PID, only ours) when the test is over."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_starts_and_answers_health(tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]) -> None:
    """twistd -n pxeboot serves /health and logs the shutdown line on SIGTERM."""
    port = free_port()
    config = write_config(tmp_path, port)
    log = tmp_path / "log"
    with log.open("wb") as out:
        process = subprocess.Popen(twistd("pxeboot", "--config", str(config)), cwd=REPO,
                                   stdout=out, stderr=subprocess.STDOUT)
    stop_later.append(process)
    body = wait_for(f"http://127.0.0.1:{port}/health", process)
    assert b'"status": "ok"' in body
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) in (0, -signal.SIGTERM)  # twistd re-raises the signal
    text = log.read_text()
    assert "pxetwist stopping with" in text


def test_bad_config_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    """A pool start of 10.0.0.300 ends twistd non-zero with one line naming range_start."""
    config = write_config(tmp_path, free_port())
    config.write_text(config.read_text() + "[dhcp.reservations]\n")
    config.write_text(config.read_text().replace("mode = off", "mode = off\nrange_start = 10.0.0.300"))
    result = subprocess.run(twistd("pxeboot", "--config", str(config)), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "[dhcp] range_start: '10.0.0.300' is not an IPv4 address" in lines[0]


def test_corrupt_state_file_exits_non_zero(tmp_path: Path) -> None:
    """A state file that is not SQLite ends twistd with one line, and is left as it was."""
    config = write_config(tmp_path, free_port())
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "state.sqlite").write_bytes(b"garbage" * 50)
    result = subprocess.run(twistd("pxeboot", "--config", str(config)), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "state file" in result.stderr and "file is not a database" in result.stderr
    assert (tmp_path / "var" / "state.sqlite").read_bytes() == b"garbage" * 50


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_drops_root_after_binding(tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]) -> None:
    """As root with -u nobody -g nogroup: binds, then serves as nobody, state still writable."""
    # nobody must be able to read the code and the config folder
    work = Path("/tmp") / f"pxetwist-privdrop-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    try:
        port = free_port()
        config = write_config(work, port)
        process = subprocess.Popen(
            twistd("-u", "nobody", "-g", "nogroup", "pxeboot", "--config", str(config)),
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        stop_later.append(process)
        wait_for(f"http://127.0.0.1:{port}/health", process)
        status = Path(f"/proc/{process.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4
        state = work / "var" / "state.sqlite"
        assert state.stat().st_uid == 65534
    finally:
        for process in stop_later:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)

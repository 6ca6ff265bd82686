"""The real `twistd -n pxeboot` process: starts, answers, drops root, exits on bad config."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def root_lab(tag: str) -> Iterator[tuple[Path, Any, list[subprocess.Popen[bytes]]]]:
    """A world-readable work folder (``tftproot``, ``catalog``) under /tmp, which nobody can
    read, and a lab namespace; yields them with a list of processes to stop afterwards."""
    from lab.netns import LabNet

    work = Path("/tmp") / f"pxetwist-{tag}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o755)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("tftproot", "catalog"):
            (work / name).mkdir(mode=0o755)
        net = LabNet().up()
        try:
            yield work, net, processes
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=15)
            net.down()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_for_health_in(net: Any, process: subprocess.Popen[bytes], log: Path) -> str:
    """/health on port 80 inside the namespace, once it answers (the log if it dies)."""
    deadline = time.monotonic() + 30
    while True:
        health = subprocess.run(net.exec_argv("curl", "-sf", "--max-time", "2",
                                              "http://127.0.0.1:80/health"),
                                capture_output=True, text=True, timeout=10)
        if health.returncode == 0 or time.monotonic() > deadline:
            return health.stdout
        assert process.poll() is None, log.read_text()
        time.sleep(0.2)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (``Uid``, ``Gid``, ``CapEff``, ``NoNewPrivs``, ...)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":", 1) for line in status.splitlines() if ":" in line)


@pytest.mark.skipif(os.geteuid() != 0, reason="binding 67/69/80 and namespaces need root")
@pytest.mark.skipif(shutil.which("ip") is None or shutil.which("curl") is None,
                    reason="iproute2 and curl are needed")
def test_binds_67_69_4011_80_as_root_then_serves_as_nobody() -> None:
    """In a namespace made here, as root: `twistd -u nobody -g nogroup -n pxeboot` in full
    mode binds DHCP 67 and 4011, TFTP 69 and HTTP 80, then runs as nobody:nogroup (every
    uid and gid, no capabilities) and still answers DHCPINFORM, an RRQ and /health."""
    with root_lab("privports") as (work, net, processes):
        (work / "tftproot" / "probe.bin").write_bytes(b"p" * 1300)
        config = work / "pxe.ini"
        config.write_text(
            f"[server]\naddress = {net.address}\nstate = var/state.sqlite\n"
            "[dhcp]\nmode = full\nrange_start = 10.77.0.100\nrange_end = 10.77.0.150\n"
            "[tftp]\nroot = tftproot\n[http]\nport = 80\n[catalog]\npaths = catalog\n")
        log = work / "log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                net.exec_argv(*twistd("-u", "nobody", "-g", "nogroup", "pxeboot", "--config",
                                      str(config))),
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        assert '"status": "ok"' in wait_for_health_in(net, process, log)
        fields = proc_status(process.pid)
        assert fields["Uid"].split() == ["65534"] * 4
        nogroup = grp.getgrnam("nogroup").gr_gid
        assert fields["Gid"].split() == [str(nogroup)] * 4
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
        sockets = subprocess.run(net.exec_argv("ss", "-lnup"), capture_output=True,
                                 text=True, timeout=10).stdout
        for port in (":67 ", ":69 ", ":4011 "):
            assert port in sockets, sockets
        probes = subprocess.run(
            net.exec_argv(sys.executable, "-m", "tests.integration.garbage_client",
                          "--count", "0"),
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert probes.returncode == 0, probes.stderr
        result = json.loads(probes.stdout)
        assert result["dhcp_probe"]["answered"]
        assert result["tftp_probe"]["bytes"] == 1300
        assert (work / "var" / "state.sqlite").stat().st_uid == 65534


def unit_capabilities() -> list[str]:
    """CapabilityBoundingSet of etc/pxetwist.service, as setpriv names (net_raw, ...)."""
    unit = (REPO / "etc" / "pxetwist.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("CapabilityBoundingSet="))
    return [cap.lower().removeprefix("cap_") for cap in line.split("=", 1)[1].split()]


@pytest.mark.skipif(os.geteuid() != 0, reason="namespaces and capabilities need root")
@pytest.mark.skipif(shutil.which("setpriv") is None or shutil.which("ip") is None
                    or shutil.which("curl") is None,
                    reason="setpriv (util-linux), iproute2 and curl are needed")
@pytest.mark.parametrize("missing", [None, "net_bind_service"])
def test_systemd_unit_capability_set_is_enough(missing: str | None) -> None:
    """Started as the unit starts it (root limited to its CapabilityBoundingSet, no new
    privileges, -u nobody -g nogroup), twistd binds 67/4011 to an interface, 69 and 80,
    and serves as nobody; without CAP_NET_BIND_SERVICE it stops with an error."""
    unit = (REPO / "etc" / "pxetwist.service").read_text()
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    caps = [cap for cap in unit_capabilities() if cap != missing]
    with root_lab("unitcaps") as (work, net, processes):
        config = work / "pxe.ini"
        config.write_text(
            f"[server]\naddress = {net.address}\ninterface = {net.bridge}\n"
            "state = var/state.sqlite\n[dhcp]\nmode = proxy\n[tftp]\nroot = tftproot\n"
            "[http]\nport = 80\n[catalog]\npaths = catalog\n")
        argv = ["setpriv", "--bounding-set", ",".join(["-all", *(f"+{c}" for c in caps)]),
                "--no-new-privs", *twistd("-u", "nobody", "-g", "nogroup", "pxeboot",
                                          "--config", str(config))]
        log = work / "log"
        with log.open("wb") as out:
            process = subprocess.Popen(net.exec_argv(*argv), cwd=REPO, stdout=out,
                                       stderr=subprocess.STDOUT)
        processes.append(process)
        if missing:
            assert process.wait(timeout=30) != 0
            assert "Permission denied" in log.read_text()
            return
        assert '"status": "ok"' in wait_for_health_in(net, process, log)
        fields = proc_status(process.pid)
        assert fields["Uid"].split() == ["65534"] * 4
        assert fields["NoNewPrivs"].strip() == "1"
        sockets = subprocess.run(net.exec_argv("ss", "-lnu"), capture_output=True,
                                 text=True, timeout=10).stdout
        assert f"%{net.bridge}:67 " in sockets and f"%{net.bridge}:4011 " in sockets
        assert ":69 " in sockets

"""isc-dhcp-client against pxetwist full mode, in a namespace pair made here; and the
lease table surviving kill -9.

Everything stays inside two network namespaces joined by a veth pair; nothing
touches the machine's interfaces. Needs root, iproute2 and dhclient.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import veth_pair
from tests.markers import in_namespaces

REPO = Path(__file__).resolve().parents[2]

pytestmark = in_namespaces("dhclient", "ip",
                           why="dhclient and ip (isc-dhcp-client, iproute2) are needed")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """Two namespaces, server (10.77.9.1/24 on pxds) and client (pxdc), joined by veth."""
    with veth_pair("10.77.9.1/24", "pxd") as pair:
        yield pair


class Server:
    """pxetwist in full mode inside the server namespace, bound to its veth."""

    def __init__(self, folder: Path, netns: str) -> None:
        self.folder = folder
        self.netns = netns
        for name in ("tftproot", "catalog"):
            (folder / name).mkdir(exist_ok=True)
        self.config = folder / "pxe.ini"
        self.config.write_text(
            f"[server]\naddress = 10.77.9.1\ninterface = {netns}\nstate = state.sqlite\n"
            "[dhcp]\nmode = full\nrange_start = 10.77.9.100\nrange_end = 10.77.9.150\n"
            "lease_time = 600\n[tftp]\nenabled = no\nroot = tftproot\n"
            "[http]\nport = 8080\n[catalog]\npaths = catalog\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c",
             "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "pxeboot",
             "--config", str(self.config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if "pxetwist serving" in (self.folder / "server.log").read_text():
                return
            assert self.process.poll() is None, (self.folder / "server.log").read_text()
            time.sleep(0.1)
        raise AssertionError("server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)

    def leases(self) -> list[tuple[str, str, str]]:
        conn = sqlite3.connect(self.folder / "state.sqlite")
        try:
            return conn.execute("SELECT ip, mac, state FROM leases ORDER BY ip").fetchall()
        finally:
            conn.close()


def dhclient(netns: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    dev = netns
    return subprocess.run(
        ["ip", "netns", "exec", netns, "dhclient", "-1", "-v", "-sf", "/bin/true", "-lf",
         str(folder / "dhclient.leases"), "-pf", str(folder / "dhclient.pid"), *args, dev],
        capture_output=True, text=True, timeout=60)


def test_dhclient_gets_renews_and_releases(netns: tuple[str, str], tmp_path: Path) -> None:
    """dhclient gets a lease, gets the same one again, and releases it."""
    server_ns, client_ns = netns
    server = Server(tmp_path, server_ns)
    server.start()
    try:
        got = dhclient(client_ns, tmp_path)
        assert got.returncode == 0, got.stderr
        assert "DHCPACK of 10.77.9.1" in got.stderr
        leased = got.stderr.split("DHCPACK of ")[1].split()[0]
        assert server.leases()[0][0] == leased and server.leases()[0][2] == "bound"
        again = dhclient(client_ns, tmp_path)
        assert f"DHCPACK of {leased}" in again.stderr
        # what a dhclient script would do with the lease (-sf /bin/true does nothing), so
        # that the RELEASE can be unicast from the leased address
        run("ip", "-n", client_ns, "addr", "add", f"{leased}/24", "dev", client_ns)
        released = dhclient(client_ns, tmp_path, "-r")
        assert released.returncode == 0
        deadline = time.monotonic() + 5
        while server.leases()[0][2] != "released" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.leases()[0][2] == "released"
    finally:
        server.stop()


def test_acked_leases_survive_kill_9(netns: tuple[str, str], tmp_path: Path) -> None:
    """After SIGKILL and a restart, the ACKed lease is in the store and is not given to
    another client."""
    server_ns, client_ns = netns
    server = Server(tmp_path, server_ns)
    server.start()
    got = dhclient(client_ns, tmp_path)
    leased = got.stderr.split("DHCPACK of ")[1].split()[0]
    server.stop(signal.SIGKILL)
    assert [row[0] for row in server.leases()] == [leased]
    server.start()
    try:
        other = tmp_path / "other"
        other.mkdir()
        run("ip", "-n", client_ns, "link", "set", client_ns, "address", "52:54:00:77:77:77")
        second = dhclient(client_ns, other)
        assert second.returncode == 0, second.stderr
        assert f"DHCPACK of {leased} " not in second.stderr
    finally:
        server.stop()

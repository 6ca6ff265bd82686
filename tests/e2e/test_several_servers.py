"""Several servers, one PostgreSQL state (issue 16): a machine assigned through server A's
API boots, in a real VM, from server B (B answers its DHCP, B serves the script and the
kernel), into A's assignment; A's /events shows the boot B saw, tagged with B."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import payload, pxetwist_server
from lab.netns import LabNet
from lab.qemu import start_vm

BOOT_TIMEOUT = 150
MAC = "52:54:00:e2:16:01"


def _config(folder: Any, address: str, interface: str, url: str, mode: str) -> Any:
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    pool = "range_start = 10.77.0.100\nrange_end = 10.77.0.150\n" if mode == "full" else ""
    config = folder / "pxe.ini"
    config.write_text(
        f"[server]\naddress = {address}\ninterface = {interface}\nstate = {url}\n"
        f"[dhcp]\nmode = {mode}\n{pool}"
        "[tftp]\nroot = tftproot\n[http]\nport = 8080\n[catalog]\npaths = catalog\n"
        "rescan_interval = 0\n[boot]\nunknown = menu\nmenu_timeout = 0\n")
    payload.write_entry(folder / "catalog", "menu", "menu-default", "Menu default")
    payload.write_entry(folder / "catalog", "assigned", "assigned-on-a", "Assigned on A")
    return config


def _start_in(net: LabNet, folder: Any, config: Any, peer: bool) -> pxetwist_server.Server:
    """The real twistd in the lab namespace (``peer``: in the peer namespace)."""
    log = (folder / "pxetwist.log").open("ab")
    process = subprocess.Popen(
        net.exec_argv(sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                      "-n", "--pidfile=", "pxeboot", "--config", str(config), peer=peer),
        cwd=pxetwist_server.REPO, stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    server = pxetwist_server.Server(net, folder, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / "pxetwist.log").read_text()[-2000:]
        done = subprocess.run(net.exec_argv("curl", "-sf", "--max-time", "1",
                                            "http://127.0.0.1:8080/health", peer=peer),
                              capture_output=True, timeout=5)
        if done.returncode == 0:
            return server
        time.sleep(0.2)
    server.stop()
    raise AssertionError("pxetwist did not start")


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory, pg_cluster: Any
                ) -> Iterator[tuple[pxetwist_server.Server, pxetwist_server.Server]]:
    """A (10.77.0.1, API only: DHCP off) and B (10.77.0.2 in the peer namespace, full
    mode) sharing one database."""
    folder = tmp_path_factory.mktemp("lab-two")
    url = pg_cluster.new_database()
    net = LabNet().up(with_peer=True)
    servers: list[pxetwist_server.Server] = []
    try:
        servers.append(_start_in(net, folder / "a", _config(
            folder / "a", net.address, net.bridge, url, "off"), peer=False))
        servers.append(_start_in(net, folder / "b", _config(
            folder / "b", net.peer_address, "pxlv1", url, "full"), peer=True))
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        net.down()


def test_vm_assigned_on_a_boots_from_b(
    two_servers: tuple[pxetwist_server.Server, pxetwist_server.Server]
) -> None:
    """A VM assigned through server A's API boots from server B, and A's events show B's boot."""
    a, b = two_servers
    a.api("PUT", f"/machines/{MAC}", {"entry": "assigned", "once": True})
    vm = start_vm(b.net, b.folder, MAC, "bios")
    try:
        assert vm.wait_marker("assigned-on-a", BOOT_TIMEOUT) is not None
    finally:
        vm.stop()
    time.sleep(1.0)  # the boot's last events reach A
    events = a.api("GET", f"/events?mac={MAC}")["events"]
    by_b = [e["stage"] for e in events if e.get("server") == b.net.peer_address]
    assert "dhcp.ack" in by_b and "http.kernel" in by_b, events
    assert a.api("GET", f"/machines/{MAC}")["state"] == "installing"

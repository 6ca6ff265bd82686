"""Crash durability: a client runs DORA as fast as it can while pxetwist (the real
twistd, full mode) is killed with SIGKILL at seeded random points, 20 times; API
changes are made just before some kills.

After every kill the store (read with sqlite3) holds every lease the client saw
ACKed, with an expiry no earlier than the REQUEST time plus the lease time, and no
address was ever ACKed to two clients. After every restart the catalog label and the
machine assignment changed through the API just before the kill are still there.

The namespace pair (a /16, so the pool does not run out) is made here and removed
afterwards; nothing touches the machine's interfaces. Needs root and iproute2.
``PXETWIST_KILLS=200`` runs a longer series (the figures in docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.netns import veth_pair
from tests.markers import in_namespaces

REPO = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("PXETWIST_KILLS", "20"))
LEASE_TIME = 3600
ENTRY = "lab-ipxe"  # catalog/lab.ipxe

pytestmark = in_namespaces("ip", "curl", why="iproute2 and curl are needed")


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """Server namespace (10.78.0.1/16 on its veth) and client namespace, cabled."""
    with veth_pair("10.78.0.1/16", "pxk") as namespaces:
        yield namespaces


class Server:
    """twistd pxeboot in full mode in the server namespace, restartable."""

    def __init__(self, folder: Path, netns: str) -> None:
        self.folder = folder
        self.netns = netns
        for name in ("tftproot", "catalog"):
            (folder / name).mkdir(exist_ok=True)
        (folder / "catalog" / "lab.ipxe").write_text("#!ipxe\necho lab\n")
        self.config = folder / "pxe.ini"
        self.config.write_text(
            f"[server]\naddress = 10.78.0.1\ninterface = {netns}\nstate = state.sqlite\n"
            "[dhcp]\nmode = full\nrange_start = 10.78.1.0\nrange_end = 10.78.200.255\n"
            f"netmask = 255.255.0.0\nlease_time = {LEASE_TIME}\n"
            "[tftp]\nenabled = no\nroot = tftproot\n"
            "[http]\nport = 8080\ninterface = 127.0.0.1\n"
            "[catalog]\npaths = catalog\nrescan_interval = 0\n")
        self.log = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-c",
                 "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                 "pxeboot", "--config", str(self.config)],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.log.read_text().count("pxetwist serving") >= self.starts:
                return
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.05)
        raise AssertionError("server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=15)

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        argv = ["ip", "netns", "exec", self.netns, "curl", "-sS", "--max-time", "10",
                "-o", "-", "-w", "\n%{http_code}", "-X", method, f"http://127.0.0.1:8080{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
        text, _, code = out.rpartition("\n")
        return int(code or 0), json.loads(text) if text.strip() else None

    def leases(self) -> list[tuple[str, str, float, str]]:
        conn = sqlite3.connect(self.folder / "state.sqlite")
        try:
            rows: list[tuple[str, str, float, str]] = conn.execute(
                "SELECT ip, mac, expires, state FROM leases").fetchall()
            return rows
        finally:
            conn.close()


def acks_seen(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().split("\n")
    return [json.loads(line) for line in lines[:-1] if line]  # complete lines only


def check_store(server: Server, acks: list[dict[str, Any]]) -> None:
    """Every ACKed lease is stored, bound to its MAC, at least as long as it was ACKed
    for; no address was ACKed to two MACs, no MAC got two addresses."""
    by_ip: dict[str, set[str]] = {}
    by_mac: dict[str, set[str]] = {}
    latest: dict[str, dict[str, Any]] = {}
    for ack in acks:
        by_ip.setdefault(ack["ip"], set()).add(ack["mac"])
        by_mac.setdefault(ack["mac"], set()).add(ack["ip"])
        if ack["mac"] not in latest or ack["t_req"] > latest[ack["mac"]]["t_req"]:
            latest[ack["mac"]] = ack
    assert all(len(macs) == 1 for macs in by_ip.values()), "an address went to two clients"
    assert all(len(ips) == 1 for ips in by_mac.values()), "a client changed address"
    stored = {ip: (mac, expires, state) for ip, mac, expires, state in server.leases()}
    for mac, ack in latest.items():
        assert ack["ip"] in stored, f"ACKed lease {ack} is not in the store"
        stored_mac, expires, state = stored[ack["ip"]]
        assert (stored_mac, state) == (mac, "bound"), (ack, stored[ack["ip"]])
        assert expires >= ack["t_req"] + LEASE_TIME - 0.001, (ack, expires)


def test_leases_and_api_changes_survive_sigkill_at_random_points(
        pair: tuple[str, str], tmp_path: Path) -> None:
    """KILLS SIGKILLs at seeded random points under a DORA storm and API changes: nothing
    ACKed or answered 200 is lost, no address is given twice."""
    server_ns, client_ns = pair
    rng = random.Random(20)
    server = Server(tmp_path, server_ns)
    acks_file, stop_file = tmp_path / "acks.jsonl", tmp_path / "STOP"
    server.start()
    client = subprocess.Popen(
        ["ip", "netns", "exec", client_ns, sys.executable, "-m", "tests.dhcp.dora_client",
         "--iface", client_ns, "--out", str(acks_file), "--stop-file", str(stop_file),
         "--seconds", str(30 + 6 * KILLS)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    expected_label: str | None = None
    expected_machine: tuple[str, bool] | None = None
    api_kills = 0
    try:
        for kill in range(KILLS):
            time.sleep(rng.uniform(0.05, 1.0))
            if kill % 2:
                mac = f"52:54:00:00:{kill >> 8 & 255:02x}:{kill & 255:02x}"
                once = bool(kill % 4 == 1)
                code, _ = server.api("PUT", f"/machines/{mac}", {"entry": ENTRY, "once": once})
                assert code == 200
                expected_machine = (mac, once)
            else:
                label = f"round {kill}"
                code, _ = server.api("POST", f"/pxe/{ENTRY}/menu", {"label": label})
                assert code == 200
                expected_label = label
            api_kills += 1
            server.kill()
            check_store(server, acks_seen(acks_file))
            server.start()
            if expected_label is not None:
                code, body = server.api("GET", f"/containers/{ENTRY}/info")
                assert code == 200 and body["label"] == expected_label
            if expected_machine is not None:
                code, body = server.api("GET", f"/machines/{expected_machine[0]}")
                assert code == 200 and body["entry"] == ENTRY
                assert body["once"] == expected_machine[1]
        time.sleep(0.5)
    finally:
        stop_file.write_text("")
        try:
            out, err = client.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
        if server.process is not None and server.process.poll() is None:
            server.kill()
    assert client.returncode == 0, err
    acks = acks_seen(acks_file)
    check_store(server, acks)
    counts = json.loads(out)
    print(f"kills {KILLS}, api changes before a kill {api_kills}, client {counts}, "
          f"distinct leases {len({a['ip'] for a in acks})}")
    assert counts["acks"] > KILLS

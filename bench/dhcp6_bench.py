"""DHCPv6 benchmark: Solicit/Advertise/Request/Reply exchanges per second, pxetwist
``[dhcp6] mode = full`` against dnsmasq's DHCPv6, in one run.

    sudo python bench/dhcp6_bench.py [--seconds 10] [--rate 2000 --rate 300] [--rounds 3]

The namespace pair of :mod:`dhcp_bench` with ``fd78::1/64`` and ``fd78::2/64`` (no DAD)
on the veth; Kea's ``perfdhcp -6`` runs in the client namespace on its interface
(multicast to ``ff02::1:2``, a new DUID-LLT per exchange: ``-R``). Each run starts from
an empty state; after perfdhcp ends the server is killed with SIGKILL and the IPv6
leases on disk are counted ("durable", which should be at least the Replies perfdhcp
received: pxetwist replies only once the lease is committed). Prints a markdown table;
nothing asserts a timing. Needs root, perfdhcp (kea-admin) and dnsmasq.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dhcp_bench as v4

SERVER6 = "fd78::1"
CLIENT6 = "fd78::2"
RANGE6 = ("fd78::1:0", "fd78::ff:ffff")
STAGES = ("SOLICIT-ADVERTISE", "REQUEST-REPLY")


def pxetwist_config(folder: Path) -> Path:
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    config = folder / "pxe.ini"
    config.write_text(
        "[server]\ninterface = pxdv0\nstate = state.sqlite\n[dhcp]\nmode = off\n"
        f"[dhcp6]\nmode = full\naddress = {SERVER6}\nrange_start = {RANGE6[0]}\n"
        f"range_end = {RANGE6[1]}\nlease_time = 3600\n"
        "[tftp]\nenabled = no\nroot = tftproot\n[http]\nport = 8080\n"
        "[catalog]\npaths = catalog\nrescan_interval = 0\n")
    return config


def start_server(kind: str, ns: str, folder: Path) -> subprocess.Popen[bytes]:
    """Start one server in ``ns``; return once it is up (at most 30 s)."""
    log_path = folder / "server.log"
    log = log_path.open("ab")
    if kind == "pxetwist":
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                "--pidfile=", "pxeboot", "--config", str(pxetwist_config(folder))]
        ready = "DHCPv6 full on"
    elif kind == "dnsmasq":
        argv = ["dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null", "--pid-file=",
                f"--log-facility={log_path}", f"--dhcp-range={RANGE6[0]},{RANGE6[1]},64,1h",
                f"--dhcp-leasefile={folder / 'leases'}", "--interface=pxdv0",
                "--bind-interfaces", "--dhcp-lease-max=1000000"]
        ready = "started"
    else:
        raise ValueError(kind)
    env = dict(os.environ, PYTHONPATH=str(v4.REPO))
    process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=folder, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} exited: {log_path.read_text()[-1500:]}")
        if ready in log_path.read_text(errors="replace"):
            time.sleep(0.5)
            return process
        time.sleep(0.2)
    v4.kill(process)
    raise RuntimeError(f"{kind} did not start in 30 s")


def durable_leases(kind: str, folder: Path) -> int:
    """IPv6 leases on disk after the server was killed with SIGKILL."""
    if kind == "pxetwist":
        conn = sqlite3.connect(str(folder / "state.sqlite"))
        try:
            return int(conn.execute("SELECT count(*) FROM leases WHERE state = 'bound' "
                                    "AND ip LIKE '%:%'").fetchone()[0])
        finally:
            conn.close()
    path = folder / "leases"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines()
               if len(line.split()) > 2 and ":" in line.split()[2])


def run_once(kind: str, server_ns: str, client_ns: str, rate: int, seconds: float
             ) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"pxetwist-dhcp6-bench-{kind}-"))
    process = start_server(kind, server_ns, folder)
    try:
        argv = ["ip", "netns", "exec", client_ns, "perfdhcp", "-6", "-l", "pxdv1",
                "-r", str(rate), "-p", f"{seconds:g}", "-R", "1000000", "-x", "t"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        time.sleep(1.0)  # let the last commits land before the kill
    finally:
        v4.kill(process)
    result = v4.parse_perfdhcp(out.stdout + out.stderr, STAGES)
    if result["rate"] != result["rate"]:
        print(f"# perfdhcp failed: {(out.stdout + out.stderr)[-800:]}", file=sys.stderr)
    result["durable"] = durable_leases(kind, folder)
    result["folder"] = str(folder)
    return result


def setup(server_ns: str, client_ns: str) -> None:
    v4.ip("-n", server_ns, "addr", "add", f"{SERVER6}/64", "dev", "pxdv0", "nodad")
    v4.ip("-n", client_ns, "addr", "add", f"{CLIENT6}/64", "dev", "pxdv1", "nodad")
    time.sleep(2)  # link-local addresses leave DAD


def main() -> None:
    v4.bench_main(__doc__ or "", run_once, STAGES,
                  ("exchanges", "Solicit", "Advertise", "Replies", "Request"), setup)


if __name__ == "__main__":
    main()

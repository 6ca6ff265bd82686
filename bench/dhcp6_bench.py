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

import argparse
import os
import re
import sqlite3
import statistics
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


def parse_perfdhcp6(text: str) -> dict[str, Any]:
    """Rate, per-stage counts and latencies (``-x t``) of one ``perfdhcp -6`` run."""
    result: dict[str, Any] = {"rate": float("nan"), "stages": {}}
    match = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", text)
    if match:
        result["rate"] = float(match.group(1))
    for stage in ("SOLICIT-ADVERTISE", "REQUEST-REPLY"):
        block = re.search(r"\*\*\*Statistics for: " + stage + r"\*\*\*(.*?)(\*\*\*|$)", text,
                          re.S)
        counts: dict[str, Any] = {}
        if block:
            for key in ("sent packets", "received packets", "drops", "orphans"):
                found = re.search(key + r": (\d+)", block.group(1))
                counts[key] = int(found.group(1)) if found else 0
        latencies = []
        times = re.search(r"\*\*\*Timestamps for packets: " + stage + r"\*\*\*(.*?)(\*\*\*|$)",
                          text, re.S)
        if times:
            for sent, received in re.findall(r"sent / received: ([\d.]+) / ([\d.]+)",
                                             times.group(1)):
                latencies.append((float(received) - float(sent)) * 1000)
        counts["p50"] = v4.percentile(latencies, 0.50)
        counts["p99"] = v4.percentile(latencies, 0.99)
        result["stages"][stage] = counts
    return result


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
    result = parse_perfdhcp6(out.stdout + out.stderr)
    if result["rate"] != result["rate"]:
        print(f"# perfdhcp failed: {(out.stdout + out.stderr)[-800:]}", file=sys.stderr)
    result["durable"] = durable_leases(kind, folder)
    result["folder"] = str(folder)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="perfdhcp -p (max 120)")
    parser.add_argument("--rate", type=int, action="append",
                        help="offered exchanges/s (perfdhcp -r, max 20000); repeatable; "
                             "default 2000 and 300")
    parser.add_argument("--rounds", type=int, default=3, help="max 10")
    parser.add_argument("--servers", default="pxetwist,dnsmasq")
    parser.add_argument("--keep", action="store_true", help="keep state folders")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), 120.0)
    rates = [min(max(r, 1), 20000) for r in (args.rate or [2000, 300])]
    rounds = min(max(args.rounds, 1), 10)
    servers = args.servers.split(",")
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, port 547)")
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with v4.namespaces() as (server_ns, client_ns):
        v4.ip("-n", server_ns, "addr", "add", f"{SERVER6}/64", "dev", "pxdv0", "nodad")
        v4.ip("-n", client_ns, "addr", "add", f"{CLIENT6}/64", "dev", "pxdv1", "nodad")
        time.sleep(2)  # link-local addresses leave DAD
        for round_number in range(rounds):
            for rate in rates:
                order = servers if round_number % 2 == 0 else servers[::-1]
                for kind in order:
                    result = run_once(kind, server_ns, client_ns, rate, seconds)
                    results.setdefault((rate, kind), []).append(result)
                    rr = result["stages"]["REQUEST-REPLY"]
                    print(f"# round {round_number + 1} rate {rate} {kind}: "
                          f"{result['rate']:.0f}/s, Replies {rr.get('received packets')}, "
                          f"durable {result['durable']}", file=sys.stderr, flush=True)
                    if not args.keep:
                        subprocess.run(["rm", "-rf", result["folder"]], check=False)
    print("| offered/s | server | completed exchanges/s | Solicits sent | Advertise drops | "
          "Replies received | Request drops | leases durable after kill -9 | "
          "S-A p50 / p99 ms | R-R p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (rate, kind), runs in results.items():
        def med(stage: str, key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r["stages"][stage].get(key, float("nan")) for r in runs)
        short = min(r["durable"] - r["stages"]["REQUEST-REPLY"].get("received packets", 0)
                    for r in runs)
        print(f"| {rate} | {kind} | {statistics.median(r['rate'] for r in runs):.0f} | "
              f"{med('SOLICIT-ADVERTISE', 'sent packets'):.0f} | "
              f"{med('SOLICIT-ADVERTISE', 'drops'):.0f} | "
              f"{med('REQUEST-REPLY', 'received packets'):.0f} | "
              f"{med('REQUEST-REPLY', 'drops'):.0f} | "
              f"{statistics.median(r['durable'] for r in runs):.0f} "
              f"(min durable - Replies: {short}) | "
              f"{med('SOLICIT-ADVERTISE', 'p50'):.1f} / {med('SOLICIT-ADVERTISE', 'p99'):.1f} | "
              f"{med('REQUEST-REPLY', 'p50'):.1f} / {med('REQUEST-REPLY', 'p99'):.1f} |")
    print(f"\n{rounds} rounds, medians; perfdhcp -6 -p {seconds:g} -R 1000000; "
          f"servers alternate within each round.")


if __name__ == "__main__":
    main()

"""DHCP benchmark: DORA exchanges per second, pxetwist full mode against dnsmasq and Kea, in
one run.

    sudo python bench/dhcp_bench.py [--seconds 10] [--rate 2000 --rate 300] [--rounds 3]
        [--servers pxetwist,pxetwist-pg,dnsmasq,kea]

``pxetwist-pg``: pxetwist with its state in PostgreSQL (a throwaway cluster on a Unix
socket, tests/pg.py; a fresh database per run), durable leases counted there. Two servers
on one database (``pxetwist-pg2``) and Kea on PostgreSQL (``kea-pg``): bench/dhcp_peers_bench.py.
``pxetwist=TREE``: pxetwist from another source tree (``PYTHONPATH=TREE``), for an A/B
of a change against e.g. ``pxetwist=/work/main`` in the same run.
``kea``: ``kea-dhcp4`` with its memfile backend (``persist: true``, ``lfc-interval`` left
at its default), the same subnet, pool and lease time, its lease CSV in the run's folder;
durable = addresses whose last line in that CSV has a non-zero valid lifetime. Kea
appends each lease to the CSV with a write() and no fsync, so its leases survive a kill
of the process (the page cache has them), not a power cut; pxetwist fsyncs every batch.

Makes two network namespaces of its own (server and client, a veth between them, a /16),
and runs Kea's ``perfdhcp`` in the client namespace against each server in turn
(alternating within each round). perfdhcp talks as a relay (giaddr = its own address),
so the server answers unicast to giaddr:67. Each run starts from an empty state: a
fresh SQLite file for pxetwist (``twistd -n pxeboot``, full mode), a fresh lease file
for dnsmasq (``--no-ping``) and for Kea; perfdhcp's command is the same for every
server. After perfdhcp ends the server is killed with SIGKILL and the leases on disk are
counted: a lease is durable when it survives that, so "durable" should be at least the
ACKs perfdhcp received. Prints a markdown table; nothing here asserts a timing. Needs
root, perfdhcp (kea-admin), dnsmasq and kea-dhcp4 for the servers named. ``--py-spy DIR``
records each pxetwist run's profile (``py-spy record -r 200 -f raw``) into DIR.

Every load loop is bounded: perfdhcp runs ``--seconds`` (``-p``) under a timeout, each
server is waited for at most 30 s, and only the PIDs started here are signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SERVER_IP = "10.78.0.1"
CLIENT_IP = "10.78.0.2"
RANGE = ("10.78.1.0", "10.78.254.254")  # 65,000 addresses: no run exhausts the pool
NETMASK = "255.255.0.0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True,
                          timeout=30)


@contextlib.contextmanager
def network_namespaces(*names: str) -> Iterator[None]:
    """Make ``names`` (loopback up); on the way out, also on failure, kill what runs in
    them and remove them. The benches share it (storm.py, dhcp_peers_bench.py)."""
    made: list[str] = []
    try:
        for ns in names:
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in made:
            for pid in ip("netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", ns, check=False)


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str]]:
    """A server and a client namespace joined by a veth; removed (and what runs in them
    killed) on the way out, also on failure."""
    tag = uuid.uuid4().hex[:6]
    server, client = f"pxds{tag}", f"pxdc{tag}"
    with network_namespaces(server, client):
        ip("-n", server, "link", "add", "pxdv0", "type", "veth", "peer", "name", "pxdv1")
        ip("-n", server, "link", "set", "pxdv1", "netns", client)
        ip("-n", server, "addr", "add", f"{SERVER_IP}/16", "dev", "pxdv0")
        ip("-n", server, "link", "set", "pxdv0", "up")
        ip("-n", client, "addr", "add", f"{CLIENT_IP}/16", "dev", "pxdv1")
        ip("-n", client, "link", "set", "pxdv1", "up")
        yield server, client


#: The PostgreSQL database of the current pxetwist-pg run (see :func:`main`).
DATABASE: dict[str, Any] = {}
#: ``folder``: where ``--py-spy`` puts each pxetwist run's profile (see :func:`bench_main`).
PROFILE: dict[str, Path] = {}


def pxetwist_config(folder: Path, state: str = "state.sqlite", address: str = SERVER_IP,
                    dhcp_extra: str = "") -> Path:
    """Full mode on ``pxdv0`` with the bench's pool (``dhcp_extra``: more ``[dhcp]`` lines,
    e.g. ``peers = ...``)."""
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    config = folder / "pxe.ini"
    config.write_text(
        f"[server]\naddress = {address}\ninterface = pxdv0\nstate = {state}\n"
        f"[dhcp]\nmode = full\nrange_start = {RANGE[0]}\nrange_end = {RANGE[1]}\n"
        f"netmask = {NETMASK}\nlease_time = 3600\n{dhcp_extra}"
        "[tftp]\nroot = tftproot\n[http]\nport = 8080\n[catalog]\npaths = catalog\n"
        "rescan_interval = 0\n[boot]\nunknown = menu\nmenu_timeout = 0\n")
    return config


def kea_config(folder: Path) -> Path:
    """kea-dhcp4's configuration: pxetwist's subnet, pool and lease time (3600 s, T1/T2
    at 1/2 and 7/8 as pxetwist sends them), the memfile backend persisting to
    ``leases.csv`` here (``lfc-interval`` not set: Kea's default), INFO log to a file as
    pxetwist's. UDP sockets: perfdhcp is a relay, every request is unicast to us."""
    config = {"Dhcp4": {
        "interfaces-config": {"interfaces": ["pxdv0"], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True,
                           "name": str(folder / "leases.csv")},
        "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3150,
        "subnet4": [{"id": 1, "subnet": f"{SERVER_IP}/16",
                     "pools": [{"pool": f"{RANGE[0]} - {RANGE[1]}"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": str(folder / "kea.log")}]}],
    }}
    path = folder / "kea-dhcp4.conf"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_server(kind: str, ns: str, folder: Path) -> subprocess.Popen[bytes]:
    """Start one server in ``ns``; return once it answers (at most 30 s)."""
    kind, _, tree = kind.partition("=")
    if kind in ("pxetwist", "pxetwist-pg"):
        state = DATABASE["url"] if kind == "pxetwist-pg" else "state.sqlite"
        return start_pxetwist(ns, folder, pxetwist_config(folder, state),
                              Path(tree) if tree else REPO)
    if kind == "dnsmasq":
        argv = ["dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null", "--pid-file=",
                f"--log-facility={folder / 'dnsmasq.log'}", "--no-ping",
                f"--dhcp-range={RANGE[0]},{RANGE[1]},{NETMASK},1h",
                f"--dhcp-leasefile={folder / 'leases'}", "--interface=pxdv0",
                "--bind-interfaces", "--dhcp-lease-max=100000"]
        return start(kind, argv, ns, folder, lambda: "started" in log_text(
            folder / "dnsmasq.log"))
    if kind == "kea":
        return start(kind, ["kea-dhcp4", "-c", str(kea_config(folder))], ns, folder,
                     lambda: "DHCP4_STARTED" in log_text(folder / "kea.log"),
                     env={"KEA_PIDFILE_DIR": str(folder), "KEA_LOCKFILE_DIR": str(folder)})
    raise ValueError(kind)


def start_pxetwist(ns: str, folder: Path, config: Path, repo: Path = REPO
                   ) -> subprocess.Popen[bytes]:
    """The real ``twistd -n pxeboot`` with ``config`` (the code of ``repo``), ready once
    ``/health`` answers."""
    argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
            "--pidfile=", "pxeboot", "--config", str(config)]
    return start("pxetwist", argv, ns, folder, lambda: subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "1",
         "http://127.0.0.1:8080/health"], capture_output=True, timeout=5).returncode == 0,
        env={"PYTHONPATH": str(repo)})


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def start(kind: str, argv: list[str], ns: str, folder: Path, ready: Callable[[], bool],
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Run ``argv`` in ``ns`` (output to ``folder/server.log``); return once ``ready()``
    (at most 30 s), or kill it and raise."""
    log = (folder / "server.log").open("ab")
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=folder,
                               env=environment, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} exited: {log_text(folder / 'server.log')[-1500:]}")
        if ready():
            return process
        time.sleep(0.2)
    kill(process)
    raise RuntimeError(f"{kind} did not start in 30 s")


def kill(process: subprocess.Popen[Any]) -> None:
    """SIGKILL our server (``ip netns exec`` execs it, so the PID is the server's)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def durable_leases(kind: str, folder: Path) -> int:
    """Leases on disk after the server was killed with SIGKILL."""
    kind = kind.partition("=")[0]
    if kind == "pxetwist-pg":
        import psycopg

        with psycopg.connect(DATABASE["url"]) as conn:
            row = conn.execute("SELECT count(*) FROM leases WHERE state = 'bound'").fetchone()
            return int(row[0]) if row else 0
    if kind == "pxetwist":
        conn = sqlite3.connect(str(folder / "state.sqlite"))
        try:
            return int(conn.execute(
                "SELECT count(*) FROM leases WHERE state = 'bound'").fetchone()[0])
        finally:
            conn.close()
    if kind == "kea":
        return kea_durable(folder / "leases.csv")
    path = folder / "leases"
    return len(path.read_text().splitlines()) if path.exists() else 0


def kea_durable(path: Path) -> int:
    """Addresses whose last line in a Kea memfile CSV has a non-zero valid lifetime (the
    file is appended to; a later line for an address replaces the earlier ones)."""
    if not path.exists():
        return 0
    last: dict[str, str] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("address"):
                last[row["address"]] = row.get("valid_lifetime") or "0"
    return sum(1 for lifetime in last.values() if lifetime != "0")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def parse_perfdhcp(text: str, stages: tuple[str, str] = ("DISCOVER-OFFER", "REQUEST-ACK")
                   ) -> dict[str, Any]:
    """Rate, per-stage counts, and per-exchange latencies (``-x t``) of one run
    (``stages``: perfdhcp's names of the two exchanges, IPv4 or IPv6)."""
    result: dict[str, Any] = {"rate": float("nan"), "stages": {}}
    match = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", text)
    if match:
        result["rate"] = float(match.group(1))
    for stage in stages:
        block = re.search(r"\*\*\*Statistics for: " + stage + r"\*\*\*(.*?)(\*\*\*|$)", text,
                          re.S)
        counts: dict[str, Any] = {}
        if block:
            for key in ("sent packets", "received packets", "drops", "orphans"):
                found = re.search(key + r": (\d+)", block.group(1))
                counts[key] = int(found.group(1)) if found else 0
        latencies: list[float] = []
        times = re.search(r"\*\*\*Timestamps for packets: " + stage + r"\*\*\*(.*?)(\*\*\*|$)",
                          text, re.S)
        if times:
            for sent, received in re.findall(r"sent / received: ([\d.]+) / ([\d.]+)",
                                             times.group(1)):
                latencies.append((float(received) - float(sent)) * 1000)
        counts["p50"] = percentile(latencies, 0.50)
        counts["p99"] = percentile(latencies, 0.99)
        result["stages"][stage] = counts
    return result


def run_once(kind: str, server_ns: str, client_ns: str, rate: int, seconds: float
             ) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"pxetwist-dhcp-bench-{kind.partition('=')[0]}-"))
    if kind == "pxetwist-pg":
        DATABASE["url"] = DATABASE["cluster"].new_database()
    process = start_server(kind, server_ns, folder)
    spy = profiler(kind, process.pid, rate, seconds)
    cpu = cpu_seconds(process.pid)
    try:
        # -R: distinct clients (sequential MACs), far more than a run uses, so each
        # exchange is a new client and a new lease.
        argv = ["ip", "netns", "exec", client_ns, "perfdhcp", "-4", "-l", CLIENT_IP,
                "-r", str(rate), "-p", f"{seconds:g}", "-R", "1000000", "-x", "t", SERVER_IP]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        time.sleep(1.0)  # let the last commits land before the kill
        cpu = cpu_seconds(process.pid) - cpu
    finally:
        kill(process)
        if spy is not None:
            spy.wait(timeout=60)
    result = parse_perfdhcp(out.stdout + out.stderr)
    if result["rate"] != result["rate"]:
        print(f"# perfdhcp failed: {(out.stdout + out.stderr)[-800:]}", file=sys.stderr)
    result["durable"] = durable_leases(kind, folder)
    result["cpu"] = cpu
    result["folder"] = str(folder)
    return result


def cpu_per_reply(result: dict[str, Any], stage: str) -> float:
    """Server CPU milliseconds (from perfdhcp's start to the kill) per final reply
    received: the work of exchanges perfdhcp dropped counts too."""
    received = result["stages"][stage].get("received packets", 0)
    return 1000 * result.get("cpu", float("nan")) / received if received else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the server used so far (all its threads): less at the
    mercy of other loads on the machine than its rate is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profiler(kind: str, pid: int, rate: int, seconds: float
             ) -> subprocess.Popen[bytes] | None:
    """With ``--py-spy``: py-spy sampling a pxetwist server for the run (200 Hz, raw
    collapsed stacks, one file per run)."""
    folder = PROFILE.get("folder")
    if folder is None or not kind.startswith("pxetwist"):
        return None
    name = kind.replace("=", "-").replace("/", "_")
    out = folder / f"{name}-{rate}-{time.strftime('%H%M%S')}.txt"
    return subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "200", "-f", "raw", "-d",
                             str(int(seconds) + 1), "-p", str(pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench_main(doc: str, run: Any, stages: tuple[str, str], names: tuple[str, ...],
               setup: Any = None) -> None:
    """The command line, the rounds (servers alternating) and the table, for
    ``run(kind, server_ns, client_ns, rate, seconds)`` (this module's :func:`run_once`, or
    dhcp6_bench's); ``names``: column names of the exchange, its first and second message,
    the first reply and the last replies (``DORA``, ``DISCOVER``, ``OFFER``, ``ACKs``,
    ``REQUEST``); ``setup(server_ns, client_ns)`` runs once the namespaces exist."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="perfdhcp -p (max 120)")
    parser.add_argument("--rate", type=int, action="append",
                        help="offered exchanges/s (perfdhcp -r, max 20000); repeatable; "
                             "default 2000 and 300")
    parser.add_argument("--rounds", type=int, default=3, help="max 10")
    parser.add_argument("--servers", default="pxetwist,dnsmasq")
    parser.add_argument("--keep", action="store_true", help="keep state folders")
    parser.add_argument("--py-spy", type=Path, help="record pxetwist runs' profiles here")
    args = parser.parse_args()
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        PROFILE["folder"] = args.py_spy
    loads = [Path("/proc/loadavg").read_text().strip()]
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    seconds = min(max(args.seconds, 1.0), 120.0)
    rates = [min(max(r, 1), 20000) for r in (args.rate or [2000, 300])]
    rounds = min(max(args.rounds, 1), 10)
    servers = args.servers.split(",")
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, DHCP ports)")
    # SIGTERM (e.g. from a background job's kill) unwinds like Ctrl-C: the namespaces
    # and what runs in them go too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    first, second = stages
    exchange, sent, offer, ack, request = names
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        if "pxetwist-pg" in servers:
            sys.path.insert(0, str(REPO))
            from tests import pg

            if pg.missing():
                sys.exit(f"pxetwist-pg: {pg.missing()}")
            DATABASE["cluster"] = stack.enter_context(pg.cluster())
        server_ns, client_ns = stack.enter_context(namespaces())
        if setup is not None:
            setup(server_ns, client_ns)
        for round_number in range(rounds):
            for rate in rates:
                order = servers if round_number % 2 == 0 else servers[::-1]
                for kind in order:
                    result = run(kind, server_ns, client_ns, rate, seconds)
                    results.setdefault((rate, kind), []).append(result)
                    got = result["stages"][second]
                    print(f"# round {round_number + 1} rate {rate} {kind}: "
                          f"{result['rate']:.0f}/s, {ack} {got.get('received packets')}, "
                          f"durable {result['durable']}, CPU {result.get('cpu', 0):.1f} s",
                          file=sys.stderr, flush=True)
                    if not args.keep:
                        subprocess.run(["rm", "-rf", result["folder"]], check=False)
    loads.append(Path("/proc/loadavg").read_text().strip())
    print(f"| offered {exchange}/s | server | completed {exchange}/s | {sent}s sent | "
          f"{offer} drops | {ack} received | {request} drops | leases durable after "
          f"kill -9 | {sent[0]}-{offer[0]} p50 / p99 ms | {request[0]}-{ack[0]} p50 / p99 ms | "
          f"server CPU ms per {ack[:-1]} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (rate, kind), runs in results.items():
        def med(stage: str, key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r["stages"][stage].get(key, float("nan")) for r in runs)
        short = min(r["durable"] - r["stages"][second].get("received packets", 0)
                    for r in runs)
        print(f"| {rate} | {kind} | {statistics.median(r['rate'] for r in runs):.0f} | "
              f"{med(first, 'sent packets'):.0f} | {med(first, 'drops'):.0f} | "
              f"{med(second, 'received packets'):.0f} | {med(second, 'drops'):.0f} | "
              f"{statistics.median(r['durable'] for r in runs):.0f} "
              f"(min durable - {ack}: {short}) | "
              f"{med(first, 'p50'):.1f} / {med(first, 'p99'):.1f} | "
              f"{med(second, 'p50'):.1f} / {med(second, 'p99'):.1f} | "
              f"{statistics.median(cpu_per_reply(r, second) for r in runs):.2f} |")
    print(f"\n{rounds} rounds, medians; perfdhcp -p {seconds:g} -R 1000000; "
          f"servers alternate within each round.\n{started}-{time.strftime('%H:%M', time.gmtime())}"
          f" UTC; /proc/loadavg before: {loads[0]}, after: {loads[1]}")


def main() -> None:
    bench_main(__doc__ or "", run_once, ("DISCOVER-OFFER", "REQUEST-ACK"),
               ("DORA", "DISCOVER", "OFFER", "ACKs", "REQUEST"))


if __name__ == "__main__":
    main()

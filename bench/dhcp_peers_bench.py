"""DHCP on PostgreSQL (issue 16): pxetwist with one and with two servers sharing one
database, against Kea's ``kea-dhcp4`` on its PostgreSQL lease backend, in one run.

    sudo python bench/dhcp_peers_bench.py [--seconds 10] [--rate 2000 --rate 1000]
        [--rounds 3] [--servers pxetwist,pxetwist-pg,pxetwist-pg2,kea-pg] [--capture]
        [--compare DIR] [--py-spy DIR]

Kinds: ``pxetwist`` (SQLite), ``pxetwist-pg`` (one server, PostgreSQL), ``pxetwist-pg2``
(two ``twistd -n pxeboot``, server identifiers 10.78.0.1 and 10.78.0.3, both in
``[dhcp] peers``, one database: each answers its RFC 3074 buckets), ``kea-pg``
(``kea-dhcp4``, ``lease-database`` postgresql, schema by ``kea-admin db-init pgsql``, the
same pool and lease time; Kea 2.2's default of one thread), ``kea-pg-mt`` (the same with
Kea's multi-threading on, 4 threads). ``--compare DIR`` adds ``KIND-compare`` for each
pxetwist kind: the same run with the code in DIR (e.g. ``git archive`` of an older commit),
for A/B in one run. One throwaway PostgreSQL cluster (tests/pg.py, a Unix socket,
``fsync`` and ``synchronous_commit`` on) serves every run, a fresh database per run.

One broadcast segment, as a site with two DHCP servers has: a bridge in the client
namespace, and a veth from it to each server namespace. perfdhcp acts as a relay
(``-l`` its address, so giaddr is set and replies come back unicast to it): to the server's
address for one server, to 255.255.255.255 for two, so the bridge hands every DISCOVER and
REQUEST to both. After perfdhcp ends (and 1 s), each pxetwist's ``/metrics`` is read (what
each server received and sent), every server gets SIGKILL, and the database is asked:
bound leases ("durable", at least the ACKs perfdhcp got) and MACs bound to two addresses.
``--capture`` also records the client side with tcpdump and checks from the ACKs that no
address went to two MACs and no ACK came from a server the REQUEST did not name
(bench/dhcp_capture.py). Prints a markdown table; nothing asserts a timing. Every loop is
bounded: perfdhcp runs ``--seconds`` under a timeout, servers get 30 s to start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dhcp_bench as v4
import dhcp_capture

#: Server identifiers; the first one is also the single servers' address.
SERVERS = ("10.78.0.1", "10.78.0.3")
#: ``kea-pg-mt``: Kea's multi-threading with this many threads (each its own database
#: connection), its documented way to more leases a second on a database backend.
KEA_THREADS = 4
KINDS = ("pxetwist", "pxetwist-pg", "pxetwist-pg2", "kea-pg", "kea-pg-mt")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return v4.ip(*args, check=check)


@contextlib.contextmanager
def segment() -> Iterator[tuple[list[str], str]]:
    """Two server namespaces and a client namespace on one bridge (in the client's);
    removed, with whatever runs in them, on the way out."""
    tag = uuid.uuid4().hex[:6]
    servers, client = [f"i16bs{n}{tag}" for n in (1, 2)], f"i16bc{tag}"
    with v4.network_namespaces(client, *servers):
        ip("-n", client, "link", "add", "br0", "type", "bridge")
        ip("-n", client, "addr", "add", f"{v4.CLIENT_IP}/16", "dev", "br0")
        for number, (ns, address) in enumerate(zip(servers, SERVERS, strict=True), 1):
            port = f"port{number}"
            ip("-n", ns, "link", "add", "pxdv0", "type", "veth", "peer", "name", port)
            ip("-n", ns, "link", "set", port, "netns", client)
            ip("-n", ns, "addr", "add", f"{address}/16", "dev", "pxdv0")
            ip("-n", ns, "link", "set", "pxdv0", "up")
            ip("-n", client, "link", "set", port, "master", "br0")
            ip("-n", client, "link", "set", port, "up")
        ip("-n", client, "link", "set", "br0", "up")
        yield servers, client


# -- Kea -------------------------------------------------------------------------------

def kea_config(folder: Path, database: str, socket_folder: str, threads: int = 0
               ) -> dict[str, Any]:
    """``kea-dhcp4``'s configuration: the bench's pool and lease time, leases in
    PostgreSQL (``host``: the cluster's socket folder, which libpq takes for a host);
    ``threads``: Kea's multi-threading with that many threads (0: off, Kea 2.2's default)."""
    network = f"{v4.RANGE[0].rsplit('.', 2)[0]}.0.0/16"
    return {"Dhcp4": {
        "multi-threading": {"enable-multi-threading": threads > 0,
                            "thread-pool-size": threads, "packet-queue-size": 64},
        "interfaces-config": {"interfaces": ["pxdv0"], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "postgresql", "name": database, "host": socket_folder,
                           "user": "postgres"},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": network,
                     "pools": [{"pool": f"{v4.RANGE[0]} - {v4.RANGE[1]}"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": str(folder / "kea.log")}]}],
    }}


def database_name(url: str) -> str:
    """The database of a ``postgresql://user@/NAME?host=...`` URL."""
    match = re.match(r"postgres(?:ql)?://[^/]*/([^?]+)", url)
    if not match:
        raise ValueError(f"no database in {url}")
    return match.group(1)


def start_kea(ns: str, folder: Path, url: str, socket_folder: str, threads: int = 0
              ) -> subprocess.Popen[bytes]:
    name = database_name(url)
    subprocess.run(["kea-admin", "db-init", "pgsql", "-u", "postgres", "-n", name,
                    "-h", socket_folder], check=True, capture_output=True, timeout=60)
    config = folder / "kea.json"
    config.write_text(json.dumps(kea_config(folder, name, socket_folder, threads), indent=1))
    return v4.start("kea-pg", ["kea-dhcp4", "-c", str(config)], ns, folder,
                    lambda: "DHCP4_STARTED" in v4.log_text(folder / "kea.log"),
                    env={"KEA_PIDFILE_DIR": str(folder), "KEA_LOCKFILE_DIR": str(folder)})


# -- after the run: what the database holds ----------------------------------------------

#: Per kind: bound leases, and MACs with more than one bound address.
BOUND_SQL = {
    "pxetwist": ("SELECT count(*) FROM leases WHERE state = 'bound'",
                 "SELECT count(*) FROM (SELECT mac FROM leases WHERE state = 'bound'"
                 " GROUP BY mac HAVING count(*) > 1) AS d"),
    "kea-pg": ("SELECT count(*) FROM lease4 WHERE state = 0",
               "SELECT count(*) FROM (SELECT hwaddr FROM lease4 WHERE state = 0"
               " GROUP BY hwaddr HAVING count(*) > 1) AS d"),
}


def database_counts(kind: str, folder: Path, url: str | None) -> tuple[int, int]:
    """(bound leases, MACs bound to two addresses) after every server was killed. An
    address bound to two MACs cannot show here (the address is the key): see
    ``--capture``."""
    count, doubles = BOUND_SQL["kea-pg" if kind.startswith("kea") else "pxetwist"]
    if url is None:
        conn = sqlite3.connect(str(folder / "state.sqlite"))
        try:
            return (int(conn.execute(count).fetchone()[0]),
                    int(conn.execute(doubles).fetchone()[0]))
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        return tuple(int(pg.execute(sql).fetchone()[0])  # type: ignore[index]
                     for sql in (count, doubles))  # type: ignore[return-value]


def scrape(ns: str) -> dict[str, float]:
    """pxetwist's DHCP counters (``/metrics``) in ``ns``, as ``name{label}`` -> value."""
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "5",
                          "http://127.0.0.1:8080/metrics"], capture_output=True, text=True,
                         timeout=10).stdout
    return parse_metrics(out)


def parse_metrics(text: str) -> dict[str, float]:
    """``pxetwist_dhcp_*_total{kind="X"} N`` lines as ``{"packets DISCOVER": N, ...}``."""
    found: dict[str, float] = {}
    for what, label, value in re.findall(
            r'^pxetwist_dhcp_(packets|replies|dropped)_total\{\w+="([^"]*)"\} (\S+)$', text,
            re.M):
        found[f"{what} {label}"] = float(value)
    return found


# -- one run ---------------------------------------------------------------------------

def run_once(name: str, servers: list[str], client: str, rate: int, seconds: float,
             cluster: Any, capture: bool, compare: Path | None = None) -> dict[str, Any]:
    """One perfdhcp run against a fresh server (or pair) of kind ``name`` (``-compare``:
    with the code in ``compare``)."""
    kind = name.removesuffix("-compare")
    repo = compare if name.endswith("-compare") and compare is not None else v4.REPO
    folder = Path(tempfile.mkdtemp(prefix=f"pxetwist-peers-bench-{name}-"))
    url = cluster.new_database() if kind != "pxetwist" else None
    processes: list[subprocess.Popen[bytes]] = []
    # -B: perfdhcp's socket may broadcast (giaddr stays its -l address)
    target = ["-B", "255.255.255.255"] if kind == "pxetwist-pg2" else [SERVERS[0]]
    metrics: dict[str, dict[str, float]] = {}
    dump: subprocess.Popen[bytes] | None = None
    try:
        if kind.startswith("kea-pg"):
            assert url is not None
            processes.append(start_kea(servers[0], folder, url, str(cluster.socket),
                                       KEA_THREADS if kind == "kea-pg-mt" else 0))
        elif kind == "pxetwist-pg2":
            assert url is not None
            peers = f"peers = {', '.join(SERVERS)}\n"
            for ns, address in zip(servers, SERVERS, strict=True):
                own = folder / address
                own.mkdir()
                processes.append(v4.start_pxetwist(
                    ns, own, v4.pxetwist_config(own, url, address, peers), repo))
        else:
            state = url or "state.sqlite"
            processes.append(v4.start_pxetwist(servers[0], folder,
                                               v4.pxetwist_config(folder, state), repo))
        if capture:
            dump = subprocess.Popen(
                ["ip", "netns", "exec", client, "tcpdump", "-i", "br0", "-s", "600", "-B",
                 "16384", "-U", "-w", str(folder / "client.pcap"), "udp", "port", "67"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        profilers = [v4.profiler(f"{name}-{address}", process.pid, rate, seconds)
                     for process, address in zip(processes, SERVERS, strict=False)]
        argv = ["ip", "netns", "exec", client, "perfdhcp", "-4", "-l", v4.CLIENT_IP,
                "-r", str(rate), "-p", f"{seconds:g}", "-R", "1000000", "-x", "t", *target]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        time.sleep(1.0)  # let the last commits land before the kill
        for profiler in profilers:
            if profiler is not None:
                profiler.wait(timeout=60)
        if kind.startswith("pxetwist"):
            for ns, address in zip(servers, SERVERS[:len(processes)], strict=False):
                metrics[address] = scrape(ns)
    finally:
        for process in processes:
            v4.kill(process)
        if dump is not None:
            dump.terminate()
            dump.wait(timeout=30)
    result = v4.parse_perfdhcp(out.stdout + out.stderr)
    if result["rate"] != result["rate"]:
        print(f"# perfdhcp failed: {(out.stdout + out.stderr)[-800:]}", file=sys.stderr)
    result["durable"], result["mac_doubles"] = database_counts(kind, folder, url)
    result["metrics"] = metrics
    if capture:
        result["capture"] = dhcp_capture.tally(
            dhcp_capture.datagrams(folder / "client.pcap"))
    result["folder"] = str(folder)
    return result


def describe(kind: str, result: dict[str, Any]) -> str:
    """One run in a line: rate, ACKs, durable, doubles, and per server what it saw."""
    acks = result["stages"]["REQUEST-ACK"].get("received packets", 0)
    sent = result["stages"]["DISCOVER-OFFER"].get("sent packets", 0)
    line = (f"{kind}: {result['rate']:.0f}/s, DISCOVERs sent {sent}, ACKs {acks}, "
            f"durable {result['durable']}, "
            f"MACs bound twice {result['mac_doubles']}")
    for address, counts in result["metrics"].items():
        line += (f"; {address} got DISCOVER {counts.get('packets DISCOVER', 0):.0f} "
                 f"REQUEST {counts.get('packets REQUEST', 0):.0f}, sent OFFER "
                 f"{counts.get('replies OFFER', 0):.0f} ACK {counts.get('replies ACK', 0):.0f}"
                 f" NAK {counts.get('replies NAK', 0):.0f}, dropped as peer's "
                 f"{counts.get('dropped peer-bucket', 0):.0f}")
    if "capture" in result:
        line += f"; capture {json.dumps(result['capture'])}"
    return line


def table(results: dict[tuple[int, str], list[dict[str, Any]]], rounds: int,
          seconds: float) -> str:
    lines = ["| offered DORA/s | server | completed DORA/s per round | median DORA/s | "
             "DISCOVERs sent | ACKs received | durable after kill -9 (min durable - ACKs) | "
             "MACs bound twice | D-O p50 / p99 ms | R-A p50 / p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (rate, kind), runs in results.items():
        def med(stage: str, key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r["stages"][stage].get(key, float("nan")) for r in runs)

        short = min(r["durable"] - r["stages"]["REQUEST-ACK"].get("received packets", 0)
                    for r in runs)
        lines.append(
            f"| {rate} | {kind} | {', '.join(format(r['rate'], '.0f') for r in runs)} | "
            f"{statistics.median(r['rate'] for r in runs):.0f} | "
            f"{med('DISCOVER-OFFER', 'sent packets'):.0f} | "
            f"{med('REQUEST-ACK', 'received packets'):.0f} | "
            f"{statistics.median(r['durable'] for r in runs):.0f} ({short}) | "
            f"{max(r['mac_doubles'] for r in runs)} | "
            f"{med('DISCOVER-OFFER', 'p50'):.1f} / {med('DISCOVER-OFFER', 'p99'):.1f} | "
            f"{med('REQUEST-ACK', 'p50'):.1f} / {med('REQUEST-ACK', 'p99'):.1f} |")
    lines.append(f"\n{rounds} rounds, medians; perfdhcp -p {seconds:g} -R 1000000; servers "
                 "alternate within each round.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="perfdhcp -p (max 120)")
    parser.add_argument("--rate", type=int, action="append",
                        help="offered DORA/s (max 20000); repeatable; default 2000 and 1000")
    parser.add_argument("--rounds", type=int, default=3, help="max 10")
    parser.add_argument("--servers", default=",".join(KINDS))
    parser.add_argument("--capture", action="store_true",
                        help="tcpdump the client side and check the ACKs (costs CPU)")
    parser.add_argument("--compare", type=Path,
                        help="also run each pxetwist kind with the code in this folder")
    parser.add_argument("--keep", action="store_true", help="keep state folders")
    parser.add_argument("--py-spy", type=Path,
                        help="record each pxetwist server's profile here (py-spy raw)")
    args = parser.parse_args()
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        v4.PROFILE["folder"] = args.py_spy
    seconds = min(max(args.seconds, 1.0), 120.0)
    rates = [min(max(r, 1), 20000) for r in (args.rate or [2000, 1000])]
    rounds = min(max(args.rounds, 1), 10)
    kinds = args.servers.split(",")
    if unknown := set(kinds) - set(KINDS):
        sys.exit(f"unknown servers: {', '.join(sorted(unknown))}")
    if args.compare is not None:
        kinds = [name for kind in kinds for name in (
            (kind, f"{kind}-compare") if kind.startswith("pxetwist") else (kind,))]
    if v4.os.geteuid() != 0:
        sys.exit("needs root (network namespaces, DHCP ports)")
    sys.path.insert(0, str(v4.REPO))
    from tests import pg

    if pg.missing():
        sys.exit(pg.missing())
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with pg.cluster() as cluster, segment() as (servers, client):
        for round_number in range(rounds):
            for rate in rates:
                order = kinds if round_number % 2 == 0 else kinds[::-1]
                for kind in order:
                    result = run_once(kind, servers, client, rate, seconds, cluster,
                                      args.capture, args.compare)
                    results.setdefault((rate, kind), []).append(result)
                    print(f"# {time.strftime('%H:%M:%S', time.gmtime())} round "
                          f"{round_number + 1} rate {rate} {describe(kind, result)}; load "
                          f"{Path('/proc/loadavg').read_text().split()[0]}",
                          file=sys.stderr, flush=True)
                    if not args.keep:
                        subprocess.run(["rm", "-rf", result["folder"]], check=False)
    print(table(results, rounds, seconds))


if __name__ == "__main__":
    main()

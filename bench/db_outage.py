"""PostgreSQL away for a while under DHCP load (issue 16): no ACK for a lease that was not
committed, no crash, recovery without a restart.

    sudo python bench/db_outage.py [--rate 500] [--outage 10]

pxetwist in full mode with its state in a throwaway PostgreSQL cluster (tests/pg.py), in
the namespaces of bench/dhcp_bench.py; perfdhcp offers ``--rate`` DORA/s for 5 s before,
``--outage`` s during (the cluster stopped with ``pg_ctl -m fast stop``) and 5 s after the
outage (cluster started again), each phase its own perfdhcp run. Then the server is
killed with SIGKILL and the bound leases in the database are compared with the ACKs of
each phase. Prints one markdown table; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from bench import dhcp_bench
from tests import pg


def perfdhcp(client_ns: str, rate: int, seconds: float) -> dict:
    argv = ["ip", "netns", "exec", client_ns, "perfdhcp", "-4", "-l", dhcp_bench.CLIENT_IP,
            "-r", str(rate), "-p", f"{seconds:g}", "-R", "1000000", "-x", "t",
            dhcp_bench.SERVER_IP]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    return dhcp_bench.parse_perfdhcp(out.stdout + out.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--outage", type=float, default=10.0)
    args = parser.parse_args()
    rate = min(max(args.rate, 1), 5000)
    outage = min(max(args.outage, 1.0), 60.0)
    if os.geteuid() != 0 or pg.missing():
        sys.exit(pg.missing() or "needs root (network namespaces, port 67)")
    rows = []
    with pg.cluster() as cluster, dhcp_bench.namespaces() as (server_ns, client_ns):
        dhcp_bench.DATABASE["url"] = url = cluster.new_database()
        folder = Path(tempfile.mkdtemp(prefix="pxetwist-db-outage-"))
        process = dhcp_bench.start_server("pxetwist-pg", server_ns, folder)
        starts = []
        try:
            starts.append(time.time())
            rows.append(("before", perfdhcp(client_ns, rate, 5)))
            cluster.stop()
            stopped = time.monotonic()
            starts.append(time.time())
            rows.append(("database away", perfdhcp(client_ns, rate, outage)))
            cluster.start()
            print(f"# database away {time.monotonic() - stopped:.1f} s", file=sys.stderr)
            starts.append(time.time())
            rows.append(("after (no restart)", perfdhcp(client_ns, rate, 5)))
            time.sleep(1.0)
            starts.append(time.time())
            alive = process.poll() is None
        finally:
            dhcp_bench.kill(process)
        import psycopg

        # perfdhcp's MACs are the same sequence in every run: a lease bound in a phase is
        # one whose expiry (bind time + lease_time 3600) falls in that phase
        with psycopg.connect(url) as conn:
            bound = [int(conn.execute(
                "SELECT count(*) FROM leases WHERE state = 'bound' AND expires >= %s"
                " AND expires < %s", (start + 3600, end + 3600)).fetchone()[0])
                for start, end in itertools.pairwise(starts)]
        log = (folder / "server.log").read_text(errors="replace")
    print("| phase | offered DORA/s | completed DORA/s | REQUESTs sent | ACKs received | "
          "leases bound in the phase, in the database after kill -9 |")
    print("|---|---|---|---|---|---|")
    for (name, result), durable in zip(rows, bound, strict=True):
        ra = result["stages"]["REQUEST-ACK"]
        print(f"| {name} | {rate} | {result['rate']:.0f} | {ra.get('sent packets', 0)} | "
              f"{ra.get('received packets', 0)} | {durable} |")
    print(f"\nserver still running after the outage: {alive}; 'lease commit ... failed' "
          "log lines: "
          f"{log.count('lease commit of')}; tracebacks other than those: "
          f"{log.count('Traceback') - log.count('lease commit of')}")


if __name__ == "__main__":
    main()

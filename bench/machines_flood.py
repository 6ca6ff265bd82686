"""Anonymous boot requests against the machine records: how many rows N made-up MACs
leave, and what ``GET /machines`` then costs.

    python bench/machines_flood.py [--macs 10000] [--max-machines N] [--tree TREE]
                                   [--seconds 300]

Starts the real ``twistd -n pxeboot`` (DHCP and TFTP off, HTTP on a free 127.0.0.1 port,
state in a temp folder removed at the end) from ``--tree`` (default: this checkout; give an
older tree made with ``git archive <commit> | tar -x -C TREE`` for a before/after), sends
``GET /pxe/boot.ipxe?mac=<random MAC>`` ``--macs`` times over one keep-alive connection
(bounded by ``--seconds``), stops twistd with SIGTERM (it writes what is queued), counts the
rows of ``machines`` and ``events`` in the state file, starts twistd again on the same state
and times ``GET /machines`` (best of 5; its first page when the server pages). Only the PID
started here is stopped. Prints one markdown table row.
"""

from __future__ import annotations

import argparse
import http.client
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(tree: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "pxeboot", "--config", str(config)],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("twistd did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--macs", type=int, default=10_000)
    parser.add_argument("--max-machines", type=int, default=0,
                        help="[boot] max_machines (0: leave the tree's default)")
    parser.add_argument("--tree", type=Path, default=HERE)
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args()
    rng = random.Random(13)
    with tempfile.TemporaryDirectory(prefix="pxetwist-flood-") as tmp:
        folder = Path(tmp)
        for name in ("tftproot", "catalog"):
            (folder / name).mkdir()
        port = free_port()
        config = folder / "pxe.ini"
        boot = f"[boot]\nmax_machines = {args.max_machines}\n" if args.max_machines else ""
        config.write_text(
            "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n[dhcp]\nmode = off\n"
            f"[tftp]\nenabled = no\nroot = tftproot\n[http]\nport = {port}\n"
            f"interface = 127.0.0.1\n[catalog]\npaths = catalog\n{boot}")
        process = start(args.tree, config, port)
        sent = 0
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            began = time.monotonic()
            while sent < args.macs and time.monotonic() - began < args.seconds:
                mac = "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))
                connection.request("GET", f"/pxe/boot.ipxe?mac={mac}")
                connection.getresponse().read()
                sent += 1
            flood_seconds = time.monotonic() - began
            connection.close()
        finally:
            stop(process)
        with sqlite3.connect(folder / "state.sqlite") as db:
            rows = db.execute("SELECT count(*) FROM machines").fetchone()[0]
            events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        db_bytes = (folder / "state.sqlite").stat().st_size
        process = start(args.tree, config, port)
        try:
            best, size = float("inf"), 0
            for _ in range(5):
                began = time.monotonic()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", "/machines")
                body = connection.getresponse().read()
                best = min(best, time.monotonic() - began)
                size = len(body)
                connection.close()
        finally:
            stop(process)
    print("| tree | MACs sent | send time s | machine rows | event rows | state file KiB "
          "| GET /machines bytes | GET /machines ms (best of 5) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.tree} | {sent} | {flood_seconds:.1f} | {rows} | {events} "
          f"| {db_bytes // 1024} | {size} | {best * 1000:.1f} |")


if __name__ == "__main__":
    main()

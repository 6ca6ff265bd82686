"""Server CPU per HTTP request of the routes every booting machine uses, source trees
alternating, over real sockets:

    python bench/http_request_cpu.py [--rounds 3] [--seconds 3] TREE [TREE ...]

e.g. ``python bench/http_request_cpu.py /tmp/base /work/main`` (a tree from ``git archive
<commit> | tar -x -C DIR``). Each round starts ``twistd -n pxeboot`` from each tree in
turn (``PYTHONPATH=TREE``; DHCP and TFTP off, HTTP on a free loopback port, the test
catalog of tests/http/helpers.py, one MAC assigned to its linux entry), runs ``wrk -t1
-c4`` for ``--seconds`` against each URL below and divides the server's CPU seconds
(``utime + stime`` of the process, all threads) by the requests answered. CPU time, not
wall time: steadier on a shared machine. Needs wrk and curl. Nothing is asserted.

URLs: the entry's kernel (16 KiB), the entry's script, ``/pxe/boot.ipxe``, each with
``?mac=``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.http.helpers import make_catalog  # noqa: E402

MAC = "52:54:00:ab:cd:ef"
URLS = (f"/containers/lab/files/vmlinuz?mac={MAC}", f"/containers/lab/boot.ipxe?mac={MAC}",
        f"/pxe/boot.ipxe?mac={MAC}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(tree: str, seconds: int) -> dict[str, float]:
    """One server from ``tree``: microseconds of its CPU per request, per URL."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        make_catalog(folder / "catalog")
        (folder / "tftproot").mkdir()
        port = free_port()
        (folder / "pxe.ini").write_text(
            "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n[dhcp]\nmode = off\n"
            "[tftp]\nenabled = no\nroot = tftproot\n"
            f"[http]\nport = {port}\ninterface = 127.0.0.1\n[catalog]\npaths = catalog\n")
        with (folder / "server.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                 "--pidfile=", "pxeboot", "--config", str(folder / "pxe.ini")],
                cwd=folder, env=dict(os.environ, PYTHONPATH=tree), stdout=log,
                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while subprocess.run(["curl", "-sf", "-o", "/dev/null", f"{base}/health"],
                                 timeout=10).returncode != 0:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{tree}: the server did not start")
                time.sleep(0.2)
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "-X", "PUT", "-H",
                            "Content-Type: application/json", "--data",
                            '{"entry": "lab", "once": false}', f"{base}/machines/{MAC}"],
                           check=True, timeout=10)
            per_request = {}
            for url in URLS:
                before = cpu_seconds(server.pid)
                out = subprocess.run(["wrk", "-t1", "-c4", f"-d{seconds}s", base + url],
                                     capture_output=True, text=True, check=True,
                                     timeout=seconds + 30).stdout
                used = cpu_seconds(server.pid) - before
                answered = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
                per_request[url] = 1e6 * used / max(answered, 1)
            return per_request
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(max(1, min(args.rounds, 20))):
        for tree in args.trees:
            for url, micros in measure(tree, max(1, min(args.seconds, 60))).items():
                results.setdefault((tree, url), []).append(micros)
    print("| URL | tree | server CPU per request, median (rounds) |\n|---|---|---|")
    for url in URLS:
        for tree in args.trees:
            values = results[(tree, url)]
            print(f"| `{url.split('?')[0]}` | {tree} | **{statistics.median(values):.0f} µs** "
                  f"({', '.join(f'{v:.0f}' for v in values)}) |")


if __name__ == "__main__":
    main()

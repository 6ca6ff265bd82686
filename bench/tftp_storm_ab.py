"""TFTP boot storm, A/B: source trees (and dnsmasq) alternating, with the server's CPU.

    python bench/tftp_storm_ab.py COUNT ROUNDS RUNS LABEL=TREE[:KIND[*PROCS]] ...

e.g. ``python bench/tftp_storm_ab.py 2000 3 1 main=/tmp/main new=$PWD dnsmasq=$PWD:dnsmasq``
(a tree from ``git archive <commit> | tar -x -C DIR``). Each round starts each server in a
namespace of its own (order reversed every other round), runs ``RUNS`` storms of ``COUNT``
concurrent 74 KiB downloads against it (``concurrent_downloads()`` of tftp_bench.py) and
reads, around each storm, the server's CPU seconds (``utime + stime``; summed over
``PROCS`` processes) and the namespace's UDP counters (``/proc/net/snmp``). ``*2`` starts
two processes of ``TREE/bench/tftp_server.py``: that tree must listen with
``SO_REUSEPORT`` (a scratch patch; bench/RESULTS.md, issue 18). Wall times on a shared
machine scatter; the CPU seconds much less. Needs root and dnsmasq. Nothing is asserted.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tftp_bench  # noqa: E402

#: Datagrams a lossless lock-step 74 KiB transfer puts in the namespace (RRQ, ACK 0, 53
#: ACKs to the server; OACK, 53 DATA to the client).
PER_TRANSFER = 109


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_counters(netns: str) -> dict[str, int]:
    lines = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    names, values = (line.split()[1:] for line in lines if line.startswith("Udp:"))
    return dict(zip(names, map(int, values), strict=True))


def storms(netns: str, root: Path, tree: str, kind: str, procs: int, count: int,
           runs: int) -> list[tuple[float, int, float, int, int, float]]:
    """(wall, failures, server CPU, extra datagrams, RcvbufErrors, peak RSS) per storm."""
    if kind == "pxetwist":
        argv = [sys.executable, f"{tree}/bench/tftp_server.py", str(root), "--port", "69",
                "--quiet"]
    else:
        argv = tftp_bench.server_argv(kind, root, 69)
    env = dict(os.environ, PYTHONPATH=tree)
    servers = [subprocess.Popen(["ip", "netns", "exec", netns, *argv], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
               for _ in range(procs)]
    results = []
    try:
        for server in servers:
            if kind == "pxetwist":
                assert server.stdout is not None
                if "READY" not in server.stdout.readline():
                    raise RuntimeError(f"{tree}: the server did not start")
        if kind != "pxetwist":
            time.sleep(0.5)
        code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import tftp_bench as b; "
                f"print(*b.concurrent_downloads(69, 'small', {count}))")
        for _ in range(runs):
            before, cpu_before = udp_counters(netns), sum(cpu_seconds(s.pid) for s in servers)
            out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code],
                                 capture_output=True, text=True, timeout=180).stdout.split()
            after, cpu_after = udp_counters(netns), sum(cpu_seconds(s.pid) for s in servers)
            results.append((float(out[0]), int(out[1]), cpu_after - cpu_before,
                            after["InDatagrams"] - before["InDatagrams"] - count * PER_TRANSFER,
                            after["RcvbufErrors"] - before["RcvbufErrors"],
                            max(tftp_bench.rss_mib(s.pid) for s in servers)))
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    return results


def main() -> None:
    count, rounds, runs = map(int, sys.argv[1:4])
    specs = [arg.split("=", 1) for arg in sys.argv[4:]]
    root = Path(tempfile.mkdtemp(prefix="pxetwist-storm-"))
    root.chmod(0o755)
    (root / "small").write_bytes(os.urandom(74 * 1024))
    (root / "small").chmod(0o644)
    results: dict[str, list[tuple[float, int, float, int, int, float]]] = {
        label: [] for label, _ in specs}
    print(f"# {time.strftime('%H:%M:%S')} load {Path('/proc/loadavg').read_text().strip()}")
    try:
        with tftp_bench.namespace() as netns:
            for round_number in range(rounds):
                for label, spec in specs if round_number % 2 == 0 else specs[::-1]:
                    tree, _, server = spec.partition(":")
                    kind, _, procs = (server or "pxetwist").partition("*")
                    got = storms(netns, root, tree, kind, int(procs or 1), count, runs)
                    results[label] += got
                    print(f"# round {round_number + 1} {label}: "
                          + ", ".join(f"{r[0]:.2f} s cpu {r[2]:.2f}" for r in got), flush=True)
    finally:
        for path in root.iterdir():
            path.unlink()
        root.rmdir()
    print(f"# {time.strftime('%H:%M:%S')} load {Path('/proc/loadavg').read_text().strip()}")
    print("| server | wall median (all) | server CPU median | extra datagrams median "
          "| RcvbufErrors | failures | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for label, got in results.items():
        print(f"| {label} | {statistics.median(r[0] for r in got):.2f} s "
              f"({', '.join(f'{r[0]:.2f}' for r in got)}) "
              f"| {statistics.median(r[2] for r in got):.2f} s "
              f"| {statistics.median(r[3] for r in got):.0f} | {sum(r[4] for r in got)} "
              f"| {sum(r[1] for r in got)} | {max(r[5] for r in got):.0f} MiB |")


if __name__ == "__main__":
    main()

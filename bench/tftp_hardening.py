"""Issue 13's TFTP hardening figures (items 2 and 3), for docs/RELIABILITY.md.

    python bench/tftp_hardening.py netascii [--repo DIR] [--megabytes 200] [--seconds 3]
    python bench/tftp_hardening.py spoof [--repo DIR] [--count 1000] [--limit 70]

Runs ``DIR/bench/tftp_server.py`` (default: this checkout; point ``--repo`` at a copy of
another commit, e.g. ``git archive main | tar -x -C /tmp/main``, for "before") on 127.0.0.1
and measures from outside, by its PID:

- ``netascii``: a ``--megabytes`` text file fetched in netascii mode (lock-step, blksize
  1432) for ``--seconds``, then abandoned with an ERROR. Prints the server's RSS before and
  its peak (VmHWM) after, the time from the RRQ to the first answer, and the longest wait a
  probe client saw meanwhile (a 1-byte file fetched over and over: how long the reactor was
  blocked).
- ``spoof``: ``--count`` RRQs from as many addresses in 127.1.0.0/16 that never answer
  (sockets that never read; 20 every 20 ms), the server capped at the default 1000
  sessions. Prints the session sockets the server holds over time (from /proc/PID/fd), and
  how curl (a client new to the server) fares at a few points meanwhile. Stops when the
  slots are free or at ``--limit`` seconds.

Loopback only, bounded in count and time; timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tftp_bench import free_udp_port, process

HERE = Path(__file__).resolve().parent.parent


def server(repo: Path, root: Path, *extra: str) -> tuple[list[str], int]:
    """The argv of ``repo``'s TFTP server on a free port, and that port."""
    port = free_udp_port()
    return [sys.executable, str(repo / "bench" / "tftp_server.py"), str(root), "--quiet",
            "--port", str(port), *extra], port


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def udp_sockets(pid: int) -> int:
    """Sockets the server holds, less its listener."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count - 1


def rrq(name: str, mode: str, **options: str) -> bytes:
    fields = [name, mode] + [x for kv in options.items() for x in kv]
    return b"\0\1" + b"".join(f.encode() + b"\0" for f in fields)


class Probe(threading.Thread):
    """Fetches the 1-byte file ``tiny`` over and over; keeps the longest RRQ->DATA wait."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.longest = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # a new TID each time: the same request again from the same TID before the
            # last ACK is in would be taken for a copy of the first
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(5)
                started = time.perf_counter()
                sock.sendto(rrq("tiny", "octet"), ("127.0.0.1", self.port))
                try:
                    _, tid = sock.recvfrom(2048)
                except TimeoutError:
                    self.longest = max(self.longest, 5.0)
                    continue
                self.longest = max(self.longest, time.perf_counter() - started)
                sock.sendto(b"\0\4\0\1", tid)
            time.sleep(0.01)


def netascii(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="pxetwist-h13-"))
    try:
        line = b"a line of plain text, as a config or a script would have it\n"
        with (root / "big.txt").open("wb") as f:
            block = line * (1024 * 1024 // len(line))
            for _ in range(args.megabytes):
                f.write(block)
        (root / "tiny").write_bytes(b"x")
        argv, port = server(args.repo, root)
        with process(argv, ready="READY") as proc:
            time.sleep(0.5)
            before = status_kb(proc.pid, "VmRSS")
            probe = Probe(port)
            probe.start()
            time.sleep(0.3)
            blocks = 0
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(10)
                sent = time.perf_counter()
                sock.sendto(rrq("big.txt", "netascii", blksize="1432"), ("127.0.0.1", port))
                _, tid = sock.recvfrom(2048)
                first = time.perf_counter() - sent
                ends = time.monotonic() + args.seconds
                ack = b"\0\4\0\0"
                sock.sendto(ack, tid)
                sock.settimeout(0.5)
                while time.monotonic() < ends:
                    try:
                        data, _ = sock.recvfrom(2048)
                    except TimeoutError:
                        sock.sendto(ack, tid)  # lost on the way: say again
                        continue
                    if data[:2] == b"\0\3" and data[2:4] != ack[2:4]:
                        blocks += 1
                        ack = b"\0\4" + data[2:4]
                    sock.sendto(ack, tid)
                sock.sendto(b"\0\5\0\0enough\0", tid)
            probe.done.set()
            probe.join(timeout=10)
            peak = status_kb(proc.pid, "VmHWM")
        print(f"repo {args.repo}: {args.megabytes} MB netascii: RSS before {before // 1024} MB, "
              f"peak {peak // 1024} MB; RRQ -> first answer {first * 1000:.0f} ms; "
              f"longest probe wait meanwhile {probe.longest * 1000:.0f} ms; "
              f"{blocks} blocks in {args.seconds} s")
    finally:
        shutil.rmtree(root)


def curl(port: int) -> str:
    started = time.perf_counter()
    result = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", os.devnull,
                             f"tftp://127.0.0.1:{port}/small.bin"], capture_output=True,
                            text=True, timeout=30)
    seconds = time.perf_counter() - started
    if result.returncode == 0:
        return f"curl ok in {seconds:.2f} s"
    return f"curl FAILED (exit {result.returncode}: {result.stderr.strip()[:60]})"


def spoof(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="pxetwist-h13-"))
    sockets: list[socket.socket] = []
    try:
        (root / "small.bin").write_bytes(os.urandom(74 * 1024))
        argv, port = server(args.repo, root, "--max-sessions", "1000",
                            "--max-sessions-per-client", "32")
        with process(argv, ready="READY") as proc:
            started = time.monotonic()
            for i in range(args.count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((f"127.1.{i // 250}.{i % 250 + 1}", 0))
                sock.sendto(rrq("small.bin", "octet", blksize="1432", tsize="0"),
                            ("127.0.0.1", port))
                sockets.append(sock)
                if i % 20 == 19:
                    time.sleep(0.02)  # paced: a burst would overflow the listener's buffer
            print(f"repo {args.repo}: {args.count} spoofed RRQs sent in "
                  f"{time.monotonic() - started:.2f} s; t counts from the end of sending")
            started = time.monotonic()
            checks = {0.5, 2.0, 10.0}
            for at in (0.5, 1, 2, 3, 5, 7, 8, 10, 15, 20, 30, 45, 60, args.limit):
                if at > args.limit:
                    break
                time.sleep(max(0.0, started + at - time.monotonic()))
                held = udp_sockets(proc.pid)
                note = f"; {curl(port)}" if at in checks else ""
                print(f"  t={at:>4} s: {held} session slots held{note}", flush=True)
                if held == 0 and at >= 2:
                    break
    finally:
        for sock in sockets:
            sock.close()
        shutil.rmtree(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["netascii", "spoof"])
    parser.add_argument("--repo", type=Path, default=HERE)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--limit", type=float, default=70.0)
    args = parser.parse_args()
    args.count = min(args.count, 5000)
    args.limit = min(args.limit, 120.0)
    netascii(args) if args.scenario == "netascii" else spoof(args)


if __name__ == "__main__":
    main()

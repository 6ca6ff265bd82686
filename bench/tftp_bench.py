"""TFTP benchmark: pxetwist against tftpd-hpa, atftpd and dnsmasq on this machine, in one run.

    python bench/tftp_bench.py [--rounds 3] [--quick]

Needs root (dnsmasq's TFTP port is fixed at 69, so the concurrency runs happen in a
network namespace of their own, made and removed here), tftpd-hpa (``in.tftpd``), curl,
atftp, dnsmasq; atftpd is used when unpacked at /tmp/atftpd (``apt-get download atftpd``
then ``dpkg -x`` there; never installed). Servers alternate within each round. Results are
printed as a markdown table for bench/RESULTS.md; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ATFTPD = Path("/tmp/atftpd/usr/sbin/atftpd")
MIB = 1024 * 1024


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def process(argv: list[str], ready: str | None = None, netns: str | None = None
            ) -> Iterator[subprocess.Popen[str]]:
    """Run a server; wait for its READY line (or a short settle); end it by PID."""
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if ready:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if ready not in line:
                raise RuntimeError(f"{argv[0]} did not start: {line!r}")
        else:
            time.sleep(0.5)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def server_argv(kind: str, root: Path, port: int) -> list[str]:
    if kind == "pxetwist":
        return [sys.executable, str(HERE / "tftp_server.py"), str(root), "--port", str(port),
                "--quiet"]
    if kind == "tftpd-hpa":
        return ["/usr/sbin/in.tftpd", "-L", "-s", str(root), "-a", f"127.0.0.1:{port}"]
    if kind == "atftpd":
        return [str(ATFTPD), "--daemon", "--no-fork", "--port", str(port), "--bind-address",
                "127.0.0.1", "--logfile", "/dev/null", "--maxthread", "3000", str(root)]
    if kind == "dnsmasq":
        return ["dnsmasq", "--no-daemon", "--port=0", "--enable-tftp", f"--tftp-root={root}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--tftp-max=5000",
                "--conf-file=/dev/null", "--pid-file=", "--log-facility=/dev/null"]
    raise ValueError(kind)


def ready_line(kind: str) -> str | None:
    return "READY" if kind == "pxetwist" else None


def download(port: int, name: str, window: int, blksize: int = 1468) -> float:
    """Seconds for one download with curl (lock-step) or atftp (windowed)."""
    if window == 1:
        argv = ["curl", "-sS", "--max-time", "300", "--tftp-blksize", str(blksize),
                f"tftp://127.0.0.1:{port}/{name}", "-o", "/dev/null"]
    else:
        argv = ["atftp", "--option", f"blksize {blksize}", "--option", f"windowsize {window}",
                "-g", "-r", name, "-l", "/dev/null", "127.0.0.1", str(port)]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, timeout=400)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        return float("nan")
    return seconds


def concurrent_downloads(port: int, name: str, count: int, blksize: int = 1432,
                         limit: float = 60.0) -> tuple[float, int]:
    """``count`` lock-step downloads at once from one select loop.

    :returns: (wall seconds, failures).
    """
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, dict[str, object]] = {}
    rrq = (struct.pack("!H", 1) + name.encode() + b"\0octet\0blksize\0" + str(blksize).encode()
           + b"\0tsize\0" + b"0\0")
    start = time.perf_counter()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.sendto(rrq, ("127.0.0.1", port))
        state[sock] = {"next": 1, "last": (rrq, ("127.0.0.1", port)), "seen": time.perf_counter()}
        selector.register(sock, selectors.EVENT_READ)
    done = failures = 0
    while done + failures < count and time.perf_counter() - start < limit:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj  # type: ignore[assignment]
            try:
                data, addr = sock.recvfrom(70000)  # type: ignore[attr-defined]
            except BlockingIOError:
                continue
            entry = state[sock]  # type: ignore[index]
            entry["seen"] = time.perf_counter()
            opcode = (data[0] << 8) | data[1]
            if opcode == 6:  # OACK
                reply = struct.pack("!HH", 4, 0)
            elif opcode == 3:
                block = (data[2] << 8) | data[3]
                expected = entry["next"]
                reply = struct.pack("!HH", 4, block)
                if block == (expected & 0xFFFF):  # type: ignore[operator]
                    entry["next"] = expected + 1  # type: ignore[operator]
                    if len(data) - 4 < blksize:
                        sock.sendto(reply, addr)  # type: ignore[attr-defined]
                        selector.unregister(sock)
                        sock.close()  # type: ignore[attr-defined]
                        done += 1
                        continue
            else:
                selector.unregister(sock)
                sock.close()  # type: ignore[attr-defined]
                failures += 1
                continue
            sock.sendto(reply, addr)  # type: ignore[attr-defined]
            entry["last"] = (reply, addr)
        now = time.perf_counter()
        for sock, entry in list(state.items()):
            if sock.fileno() != -1 and now - entry["seen"] > 1.0:  # type: ignore[operator]
                sock.sendto(*entry["last"])  # type: ignore[misc]
                entry["seen"] = now
    wall = time.perf_counter() - start
    for sock in state:
        if sock.fileno() != -1:
            sock.close()
    return wall, count - done


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def namespace() -> Iterator[str]:
    name = f"pxtb{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def fmt(values: list[float]) -> str:
    good = [v for v in values if v == v]
    if not good:
        return "failed"
    fails = len(values) - len(good)
    text = f"{statistics.median(good):.2f} s"
    return text + (f" ({fails} failed)" if fails else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller files, one round")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    servers = ["pxetwist", "tftpd-hpa"] + (["atftpd"] if ATFTPD.exists() else [])
    root = Path(tempfile.mkdtemp(prefix="pxetwist-tftp-bench-"))
    root.chmod(0o755)  # tftpd-hpa and atftpd read as their own unprivileged users
    sizes = {"big": (8 if args.quick else 64) * MIB, "mid": 16 * MIB, "lossy": 4 * MIB,
             "small": 74 * 1024}
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
        (root / name).chmod(0o644)
    rows: list[str] = []
    try:
        # 1. loopback throughput
        for window in (1, 16):
            times: dict[str, list[float]] = {s: [] for s in servers}
            for _ in range(rounds):
                for kind in servers:
                    port = free_udp_port()
                    with process(server_argv(kind, root, port), ready_line(kind)):
                        times[kind].append(download(port, "big", window))
            for kind in servers:
                mib_s = [sizes["big"] / MIB / t for t in times[kind] if t == t]
                rate = f"{statistics.median(mib_s):.1f} MiB/s" if mib_s else "failed"
                rows.append(f"| loopback {sizes['big'] // MIB} MiB, blksize 1468, "
                            f"window {window} | {kind} | {fmt(times[kind])} | {rate} |")
        # 2. and 3. delayed (1 ms each way) and lossy (1 %) link through the relay
        for label, name, loss, window in (
            ("1 ms each way, 16 MiB", "mid", 0.0, 16),
            ("1 ms each way, 16 MiB", "mid", 0.0, 1),
            ("1 ms each way + 1 % loss, 4 MiB", "lossy", 0.01, 1),
            ("1 ms each way + 1 % loss, 4 MiB", "lossy", 0.01, 16),
        ):
            times = {s: [] for s in servers}
            for round_number in range(rounds):
                for kind in servers:
                    if window > 1 and kind == "tftpd-hpa":
                        continue  # tftpd-hpa has no windowsize
                    port, relay_port = free_udp_port(), free_udp_port()
                    with process(server_argv(kind, root, port), ready_line(kind)), process(
                        [sys.executable, str(HERE / "udp_relay.py"), "--listen",
                         f"127.0.0.1:{relay_port}", "--server", f"127.0.0.1:{port}",
                         "--delay-ms", "1", "--loss", str(loss), "--seed",
                         str(round_number + 1)], "READY"):
                        times[kind].append(download(relay_port, name, window))
            for kind in servers:
                if times[kind]:
                    rows.append(f"| {label}, blksize 1468, window {window} | {kind} | "
                                f"{fmt(times[kind])} | |")
        # 4. concurrency, in a namespace of our own (dnsmasq's TFTP port is 69)
        if shutil.which("dnsmasq") and os.geteuid() == 0:
            with namespace() as netns:
                for count in (200, 2000):
                    for kind in ("pxetwist", "dnsmasq"):
                        argv = server_argv(kind, root, 69)
                        with process(argv, ready_line(kind), netns=netns) as proc:
                            code = (
                                f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                                "import tftp_bench as b; "
                                f"print(*b.concurrent_downloads(69, 'small', {count}))")
                            out = subprocess.run(["ip", "netns", "exec", netns, sys.executable,
                                                  "-c", code], capture_output=True, text=True,
                                                 timeout=120).stdout.split()
                            rss = rss_mib(proc.pid)  # ip netns exec execs the server
                            rows.append(f"| {count} concurrent downloads of 74 KiB, blksize "
                                        f"1432 | {kind} | {float(out[0]):.2f} s wall, "
                                        f"{out[1]} failed | RSS {rss:.0f} MiB |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| scenario | server | median time | rate / notes |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

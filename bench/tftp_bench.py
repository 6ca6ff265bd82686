"""TFTP benchmark: pxetwist against tftpd-hpa, atftpd and dnsmasq on this machine, in one run.

    python bench/tftp_bench.py [--rounds 3] [--quick] [--only GROUP] [--servers a,b]
                               [--relay c|python]

Needs root, tftpd-hpa (``in.tftpd``), curl, atftp, dnsmasq, and cc for the C delay line
(``--relay python`` needs none); atftpd is used when unpacked
at /tmp/atftpd (``apt-get download atftpd`` then ``dpkg -x`` there; never installed).
Loopback runs use 127.0.0.1. Delay/loss runs use two namespaces joined by a veth: the
server and the delay line (bench/udp_delay.c, built here; or bench/udp_relay.py) in one,
the client in the other. Concurrency runs use a
namespace of their own (dnsmasq's TFTP port is fixed at 69). Namespaces are made and
removed here. Servers alternate within each round (order reversed every other round);
progress goes to stderr, results to stdout as a markdown table for bench/RESULTS.md;
nothing here asserts a timing. Every download is bounded (curl ``--max-time``).
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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


def server_argv(kind: str, root: Path, port: int, address: str = "127.0.0.1") -> list[str]:
    if kind == "pxetwist":
        return [sys.executable, str(HERE / "tftp_server.py"), str(root), "--port", str(port),
                "--address", address, "--quiet"]
    if kind == "tftpd-hpa":
        return ["/usr/sbin/in.tftpd", "-L", "-s", str(root), "-a", f"{address}:{port}"]
    if kind == "atftpd":
        return [str(ATFTPD), "--daemon", "--no-fork", "--port", str(port), "--bind-address",
                address, "--logfile", "/dev/null", "--maxthread", "3000", str(root)]
    if kind == "dnsmasq":
        return ["dnsmasq", "--no-daemon", "--port=0", "--enable-tftp", f"--tftp-root={root}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--tftp-max=5000",
                "--conf-file=/dev/null", "--pid-file=", "--log-facility=/dev/null"]
    raise ValueError(kind)


def ready_line(kind: str) -> str | None:
    return "READY" if kind == "pxetwist" else None


def download(port: int, name: str, window: int, blksize: int = 1468, host: str = "127.0.0.1",
             netns: str | None = None, limit: int = 300) -> float:
    """Seconds for one download with curl (lock-step) or atftp (windowed); NaN if it failed."""
    if window == 1:
        argv = ["curl", "-sS", "--max-time", str(limit), "--tftp-blksize", str(blksize),
                f"tftp://{host}:{port}/{name}", "-o", "/dev/null"]
    else:
        argv = ["atftp", "--option", f"blksize {blksize}", "--option", f"windowsize {window}",
                "-g", "-r", name, "-l", "/dev/null", host, str(port)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    start = time.perf_counter()
    try:
        result = subprocess.run(argv, capture_output=True, timeout=limit + 10)
    except subprocess.TimeoutExpired:  # atftp has no overall limit of its own
        return float("nan")
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
    last_check = start
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
        if now - last_check > 0.2:  # retransmit for stalled transfers, 5 times a second
            last_check = now
            for sock, entry in state.items():
                if sock.fileno() != -1 and now - entry["seen"] > 1.0:  # type: ignore[operator]
                    sock.sendto(*entry["last"])  # type: ignore[misc]
                    entry["seen"] = now
    wall = time.perf_counter() - start
    for sock in state:
        if sock.fileno() != -1:
            sock.close()
    return wall, count - done


def rss_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SERVER_IP = "10.79.0.1"
CLIENT_IP = "10.79.0.2"


@contextmanager
def veth_pair() -> Iterator[tuple[str, str]]:
    """A server and a client namespace joined by a veth (server side ``SERVER_IP``);
    what still runs in them is killed and both are deleted on the way out."""
    tag = f"{os.getpid() % 100000}"
    server, client = f"pxts{tag}", f"pxtc{tag}"
    made: list[str] = []
    try:
        for ns in (server, client):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for argv in (["link", "add", "pxtv0", "type", "veth", "peer", "name", "pxtv1"],
                     ["link", "set", "pxtv1", "netns", client],
                     ["addr", "add", f"{SERVER_IP}/24", "dev", "pxtv0"],
                     ["link", "set", "pxtv0", "up"]):
            subprocess.run(["ip", "-n", server, *argv], check=True)
        for argv in (["addr", "add", f"{CLIENT_IP}/24", "dev", "pxtv1"],
                     ["link", "set", "pxtv1", "up"]):
            subprocess.run(["ip", "-n", client, *argv], check=True)
        yield server, client
    finally:
        for ns in made:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:  # only processes in our own namespaces
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], check=False)


@contextmanager
def namespace() -> Iterator[str]:
    name = f"pxtb{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


RelayArgv = Callable[[str, str, float, float, int], list[str]]


def delay_line(kind: str, workdir: Path) -> RelayArgv:
    """What runs the delayed link: ``relay(listen, server, delay_ms, loss, seed)`` gives
    the argv. A 1468-byte ping-pong through the C delay line: 0.08 ms p50 at 0 ms delay,
    2.17 ms at 1 ms each way; through the Python relay 0.83 ms at 0 ms on the same slow
    machine, a cost every datagram of a window pays."""
    if kind == "c":
        binary = workdir / "udp_delay"
        subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "udp_delay.c")],
                       check=True)
        progress(f"delay line: {binary} (bench/udp_delay.c)")

        def c_relay(listen: str, server: str, delay_ms: float, loss: float,
                    seed: int) -> list[str]:
            return [str(binary), listen, server, str(delay_ms), str(loss), str(seed)]
        return c_relay

    def python_relay(listen: str, server: str, delay_ms: float, loss: float,
                     seed: int) -> list[str]:
        return [sys.executable, str(HERE / "udp_relay.py"), "--listen", listen, "--server",
                server, "--delay-ms", str(delay_ms), "--loss", str(loss), "--seed", str(seed)]
    progress("delay line: bench/udp_relay.py")
    return python_relay


def progress(text: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


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
    parser.add_argument("--only", choices=["loopback", "link", "delay", "loss", "concurrency"],
                        help="run one group of scenarios")
    parser.add_argument("--servers", help="comma-separated subset of pxetwist,tftpd-hpa,atftpd")
    parser.add_argument("--relay", choices=["c", "python"], default="c",
                        help="delay line: bench/udp_delay.c (built here with cc) or "
                             "bench/udp_relay.py")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    servers = ["pxetwist", "tftpd-hpa"] + (["atftpd"] if ATFTPD.exists() else [])
    if args.servers:
        servers = [s for s in servers if s in args.servers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="pxetwist-tftp-bench-"))
    root.chmod(0o755)  # tftpd-hpa and atftpd read as their own unprivileged users
    sizes = {"big": (8 if args.quick else 64) * MIB, "mid": 16 * MIB, "lossy": 4 * MIB,
             "small": 74 * 1024}
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
        (root / name).chmod(0o644)
    rows: list[str] = []
    relay = delay_line(args.relay, root)
    try:
        # 1. loopback throughput
        for window in (1, 16) if args.only in (None, "loopback") else ():
            times: dict[str, list[float]] = {s: [] for s in servers}
            for round_number in range(rounds):
                order = servers if round_number % 2 == 0 else servers[::-1]
                for kind in order:
                    port = free_udp_port()
                    with process(server_argv(kind, root, port), ready_line(kind)):
                        seconds = download(port, "big", window)
                    times[kind].append(seconds)
                    progress(f"loopback window {window} {kind}: {seconds:.2f} s")
            for kind in servers:
                mib_s = [sizes["big"] / MIB / t for t in times[kind] if t == t]
                rate = f"{statistics.median(mib_s):.1f} MiB/s" if mib_s else "failed"
                rows.append(f"| loopback {sizes['big'] // MIB} MiB, blksize 1468, "
                            f"window {window} | {kind} | {fmt(times[kind])} | {rate} |")
        # 2. and 3. delayed (1 ms each way) and lossy (1 %) link: two namespaces over a
        # veth, the relay in the server's namespace in front of the server
        with veth_pair() as (server_ns, client_ns):
            for label, name, loss, window in (
                ("1 ms each way, 16 MiB", "mid", 0.0, 16),
                ("1 ms each way, 16 MiB", "mid", 0.0, 1),
                ("1 ms each way + 1 % loss, 4 MiB", "lossy", 0.01, 16),
                ("1 ms each way + 1 % loss, 4 MiB", "lossy", 0.01, 1),
            ):
                if args.only and args.only not in ("link", "loss" if loss else "delay"):
                    continue
                times = {s: [] for s in servers}
                for round_number in range(rounds):
                    order = servers if round_number % 2 == 0 else servers[::-1]
                    for kind in order:
                        if window > 1 and kind == "tftpd-hpa":
                            continue  # tftpd-hpa has no windowsize
                        relay_port = 6969
                        with process(server_argv(kind, root, 69, SERVER_IP), ready_line(kind),
                                     netns=server_ns), process(
                            relay(f"{SERVER_IP}:{relay_port}", f"{SERVER_IP}:69", 1.0, loss,
                                  round_number + 1), "READY", netns=server_ns):
                            seconds = download(relay_port, name, window, host=SERVER_IP,
                                               netns=client_ns, limit=120)
                        times[kind].append(seconds)
                        progress(f"{label} window {window} {kind}: {seconds:.2f} s")
                for kind in servers:
                    if times[kind]:
                        rows.append(f"| {label}, blksize 1468, window {window} | {kind} | "
                                    f"{fmt(times[kind])} | all: "
                                    f"{', '.join(f'{t:.2f}' for t in times[kind])} |")
        # 4. concurrency, in a namespace of our own (dnsmasq's TFTP port is 69)
        if shutil.which("dnsmasq") and os.geteuid() == 0 and args.only in (None,
                                                                            "concurrency"):
            with namespace() as netns:
                for count in (200, 2000):
                    walls: dict[str, list[float]] = {"pxetwist": [], "dnsmasq": []}
                    fails: dict[str, list[int]] = {"pxetwist": [], "dnsmasq": []}
                    peaks: dict[str, list[float]] = {"pxetwist": [], "dnsmasq": []}
                    for round_number in range(rounds):
                        order = ["pxetwist", "dnsmasq"][::1 if round_number % 2 == 0 else -1]
                        for kind in order:
                            argv = server_argv(kind, root, 69)
                            with process(argv, ready_line(kind), netns=netns) as proc:
                                code = (
                                    f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                                    "import tftp_bench as b; "
                                    f"print(*b.concurrent_downloads(69, 'small', {count}))")
                                out = subprocess.run(
                                    ["ip", "netns", "exec", netns, sys.executable, "-c", code],
                                    capture_output=True, text=True, timeout=120).stdout.split()
                                peak = rss_mib(proc.pid)  # ip netns exec execs the server
                            walls[kind].append(float(out[0]))
                            fails[kind].append(int(out[1]))
                            peaks[kind].append(peak)
                            progress(f"{count} concurrent {kind}: {out[0]} s, {out[1]} failed, "
                                     f"peak RSS {peak:.0f} MiB")
                    for kind in ("pxetwist", "dnsmasq"):
                        rows.append(
                            f"| {count} concurrent downloads of 74 KiB, blksize 1432 | {kind} | "
                            f"{statistics.median(walls[kind]):.2f} s wall | failures "
                            f"{'/'.join(map(str, fails[kind]))}, peak RSS "
                            f"{max(peaks[kind]):.0f} MiB; all: "
                            f"{', '.join(f'{w:.2f}' for w in walls[kind])} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| scenario | server | median time | rate / notes |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

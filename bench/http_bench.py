"""HTTP throughput: pxetwist's dynamic boot script against plain twisted.web static, and a
256 MiB file against nginx, same run.

    python bench/http_bench.py [--rounds 3] [--duration 10] [--connections 64]
                               [--downloads 5] [--compare TREE] [--keep]

Everything listens on 127.0.0.1 high ports (free ones picked at start) in a temp folder
that is removed at the end:

- pxetwist: the real ``twistd -n pxeboot --config <generated ini>`` (DHCP off, TFTP off,
  HTTP on 127.0.0.1), a catalog with one linux entry, one MAC assigned to it (so
  ``/pxe/boot.ipxe?mac=`` renders the entry's script, publishes an event, counts a metric)
  and a 256 MiB file in the TFTP root (served as ``/files/big.bin``);
- twisted.web: ``twistd -n web --path`` over a folder holding the same script as a static
  file (the reference for the dynamic route) and the same 256 MiB file;
- nginx (nginx-light): own generated config, ``-p`` prefix, ``daemon off``, own pid file,
  ``sendfile on``, access log off.

wrk: ``-t2 -c<connections> -d<duration>s --latency`` against the script URLs; curl: the
256 MiB file, ``--downloads`` times per server per round, best of them (the machine is
shared, so the best of a few short downloads is the least disturbed). Rounds alternate the
servers (order reversed every other round); the tables show each round and the median;
ratios are of medians in this run. ``--compare TREE`` adds a second pxetwist run from
another source tree (``git archive <commit> | tar -x -C TREE``) to the same rounds. Only
the PIDs started here are stopped. Prints markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import payload  # noqa: E402

MAC = "52:54:00:12:34:56"
BIG = 256 * 1024 * 1024
NGINX_CONF = """daemon off; pid {folder}/nginx.pid; error_log stderr; worker_processes 1;
events {{}}
http {{ access_log off; sendfile on; types {{ }} default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {folder}/www; }} }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                answer.read()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in 30 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop one process we started, by its PID, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def make_big(path: Path) -> None:
    """256 MiB of non-repeating bytes (not sparse, so reads hit the page cache)."""
    chunk = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for i in range(BIG // len(chunk)):
            f.write(chunk[i % 7:] + chunk[: i % 7])


def write_pxetwist(folder: Path, port: int) -> Path:
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    payload.write_entry(folder / "catalog", "lab", "bench")
    config = folder / "pxe.ini"
    config.write_text(
        "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n[dhcp]\nmode = off\n"
        "[tftp]\nenabled = no\nroot = tftproot\n"
        f"[http]\nport = {port}\ninterface = 127.0.0.1\n"
        "[catalog]\npaths = catalog\nrescan_interval = 0\n"
        "[boot]\nunknown = menu\nmenu_timeout = 0\n")
    return config


def start(argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)


def wrk(url: str, duration: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, non-2xx/socket errors) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = 0
    for match in re.finditer(r"Non-2xx or 3xx responses: (\d+)|Socket errors: connect (\d+), "
                             r"read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in match.groups() if g)
    return rate, float(p99.group(1)) * scale, errors


def curl_mib_s(url: str, downloads: int) -> float:
    """Best MiB/s of ``downloads`` whole-file downloads (checks the size each time)."""
    best = 0.0
    for _ in range(downloads):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{speed_download}",
             "--max-time", "60", url], capture_output=True, text=True, timeout=90,
            check=True).stdout.split()
        if int(out[0]) != BIG:
            raise RuntimeError(f"{url}: got {out[0]} bytes, not {BIG}")
        best = max(best, float(out[1]) / (1024 * 1024))
    return best


def start_pxetwist(folder: Path, tree: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The real ``twistd -n pxeboot`` from the source tree ``tree``, with ``MAC``
    assigned to the entry; (process, base URL)."""
    port = free_port()
    config = write_pxetwist(folder, port)
    process = start(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "pxeboot", "--config", str(config)], folder / "twistd.log", folder,
        dict(os.environ, PYTHONPATH=str(tree)))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health", process, folder / "twistd.log")
    request = urllib.request.Request(
        f"{base}/machines/{MAC}", method="PUT", data=b'{"entry": "lab", "once": false}',
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()
    return process, base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--downloads", type=int, default=5)
    parser.add_argument("--compare", type=Path, metavar="TREE",
                        help="also run pxetwist from this source tree (e.g. an older commit's"
                             " `git archive`), as 'pxetwist-compare'")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pxetwist-http-bench-"))
    root.chmod(0o755)  # nginx's workers run as www-data
    processes: list[subprocess.Popen[bytes]] = []
    bases: dict[str, str] = {}
    try:
        px, tw, ng = root / "pxetwist", root / "twisted", root / "nginx"
        for folder in (px / "tftproot", tw / "www", ng / "www"):
            folder.mkdir(parents=True)
        make_big(px / "tftproot" / "big.bin")
        for folder in (tw / "www", ng / "www"):
            os.link(px / "tftproot" / "big.bin", folder / "big.bin")
        trees = {"pxetwist": (px, REPO)}
        if args.compare:
            (root / "compare" / "tftproot").mkdir(parents=True)
            os.link(px / "tftproot" / "big.bin", root / "compare" / "tftproot" / "big.bin")
            trees["pxetwist-compare"] = (root / "compare", args.compare.resolve())
        for name, (folder, tree) in trees.items():
            process, bases[name] = start_pxetwist(folder, tree)
            processes.append(process)
        script_urls = {name: f"{base}/pxe/boot.ipxe?mac={MAC}" for name, base in bases.items()}
        file_urls = {name: f"{base}/files/big.bin" for name, base in bases.items()}
        with urllib.request.urlopen(script_urls["pxetwist"], timeout=10) as answer:
            script = answer.read()
        assert b"kernel " in script, script
        (tw / "www" / "boot.ipxe").write_bytes(script)

        tw_port, ng_port = free_port(), free_port()
        processes.append(start(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "web", "--path", str(tw / "www"),
             "--listen", f"tcp:{tw_port}:interface=127.0.0.1"], tw / "twistd.log", tw,
            dict(os.environ, PYTHONPATH=str(REPO))))
        tw_base = f"http://127.0.0.1:{tw_port}"
        wait_http(f"{tw_base}/boot.ipxe", processes[-1], tw / "twistd.log")
        script_urls["twisted"] = f"{tw_base}/boot.ipxe"
        file_urls["twisted"] = f"{tw_base}/big.bin"

        (ng / "nginx.conf").write_text(NGINX_CONF.format(folder=ng, port=ng_port))
        processes.append(start(["nginx", "-c", str(ng / "nginx.conf"), "-p", str(ng)],
                               ng / "nginx.log", ng))
        ng_base = f"http://127.0.0.1:{ng_port}"
        (ng / "www" / "probe").write_bytes(b"ok")
        wait_http(f"{ng_base}/probe", processes[-1], ng / "nginx.log")
        file_urls["nginx"] = f"{ng_base}/big.bin"
        curl_mib_s(file_urls["nginx"], 1)  # warms the page cache, checks nginx is up

        dynamic: dict[str, list[tuple[float, float, int]]] = {n: [] for n in script_urls}
        files: dict[str, list[float]] = {n: [] for n in file_urls}
        for round_no in range(args.rounds):
            flip = -1 if round_no % 2 else 1
            for name in list(script_urls)[::flip]:
                result = wrk(script_urls[name], args.duration, args.connections)
                dynamic[name].append(result)
                print(f"round {round_no + 1} wrk {name}: {result}", file=sys.stderr,
                      flush=True)
            for name in list(file_urls)[::flip]:
                speed = curl_mib_s(file_urls[name], args.downloads)
                files[name].append(speed)
                print(f"round {round_no + 1} curl {name}: {speed:.0f} MiB/s", file=sys.stderr,
                      flush=True)
    finally:
        for process in reversed(processes):
            stop(process)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"wrk -t2 -c{args.connections} -d{args.duration}s --latency, {args.rounds} rounds")
    print()
    print("| server | URL | req/s per round | median req/s | p99 per round (ms) "
          "| median p99 | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in dynamic.items():
        label = ("/boot.ipxe (static.File, same bytes)" if name == "twisted"
                 else f"/pxe/boot.ipxe?mac={MAC} (dynamic)")
        print(f"| {name} | {label} | {', '.join(f'{r[0]:.0f}' for r in runs)} "
              f"| {statistics.median(r[0] for r in runs):.0f} "
              f"| {', '.join(f'{r[1]:.1f}' for r in runs)} "
              f"| {statistics.median(r[1] for r in runs):.1f} | {sum(r[2] for r in runs)} |")
    for name in dynamic:
        if name != "twisted":
            ratio = (statistics.median(r[0] for r in dynamic[name])
                     / statistics.median(r[0] for r in dynamic["twisted"]))
            print(f"| ratio {name}/twisted | | | {ratio:.2f} | | | |")
    print()
    print(f"curl, 256 MiB file, best of {args.downloads} downloads per round")
    print()
    print("| server | MiB/s per round | median MiB/s |")
    print("|---|---|---|")
    for name, speeds in files.items():
        print(f"| {name} | {', '.join(f'{v:.0f}' for v in speeds)} "
              f"| {statistics.median(speeds):.0f} |")
    for name in files:
        if name.startswith("pxetwist"):
            ratio = statistics.median(files[name]) / statistics.median(files["nginx"])
            print(f"| ratio {name}/nginx | | {ratio:.2f} |")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

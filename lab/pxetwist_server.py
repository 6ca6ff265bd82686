"""Running the real ``twistd -n pxeboot`` inside a lab namespace with a generated config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attrs import define

from lab.netns import LabNet

REPO = Path(__file__).resolve().parent.parent


def write_config(folder: Path, net: LabNet, mode: str = "full", extra: str = "") -> Path:
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    config = folder / "pxe.ini"
    pool = "range_start = 10.77.0.100\nrange_end = 10.77.0.150\n" if mode == "full" else ""
    config.write_text(
        f"[server]\naddress = {net.address}\ninterface = {net.bridge}\nstate = state.sqlite\n"
        f"[dhcp]\nmode = {mode}\n{pool}"
        "[tftp]\nroot = tftproot\n[http]\nport = 8080\n[catalog]\npaths = catalog\n"
        "rescan_interval = 0\n[boot]\nunknown = menu\nmenu_timeout = 0\n" + extra)
    return config


@define
class Server:
    net: LabNet
    folder: Path
    process: subprocess.Popen[bytes]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the JSON API from inside the namespace (mutations: loopback only)."""
        argv = ["curl", "-sS", "--max-time", "10", "-X", method,
                f"http://127.0.0.1:8080{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        out = subprocess.run(self.net.exec_argv(*argv), capture_output=True, timeout=20,
                             check=True).stdout
        return json.loads(out)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(net: LabNet, folder: Path, config: Path) -> Server:
    log = (folder / "pxetwist.log").open("ab")
    process = subprocess.Popen(
        net.exec_argv(sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                      "-n", "--pidfile=", "pxeboot", "--config", str(config)),
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(net, folder, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((folder / "pxetwist.log").read_text()[-2000:])
        try:
            subprocess.run(net.exec_argv("curl", "-sf", "--max-time", "1",
                                         "http://127.0.0.1:8080/health"),
                           check=True, capture_output=True, timeout=5)
            return server
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError("pxetwist did not start in the lab namespace")


@contextmanager
def running(net: LabNet, folder: Path, config: Path) -> Iterator[Server]:
    """:func:`start` the server, and stop it however the block ends."""
    server = start(net, folder, config)
    try:
        yield server
    finally:
        server.stop()

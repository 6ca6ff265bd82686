"""Two real ``twistd -n pxeboot`` on loopback sharing one PostgreSQL state: an assignment
made through A's API is what B answers with, even after A is killed with SIGKILL; the
password of the state URL never reaches a log."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.test_twistd import REPO, free_port, twistd, wait_for

MAC = "52:54:00:00:04:01"
PASSWORD = "NotInAnyLog42"


def start(folder: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir()
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir()
    (folder / "catalog" / "hello.ipxe").write_text("#!ipxe\necho hello\n")
    port = free_port()
    (folder / "pxe.ini").write_text(
        f"[server]\naddress = 127.0.0.1\nstate = {url}\n[dhcp]\nmode = off\n"
        "[tftp]\nenabled = no\nroot = tftproot\n"
        f"[http]\nport = {port}\ninterface = 127.0.0.1\n[catalog]\npaths = catalog\n")
    log = (folder / "log").open("wb")
    process = subprocess.Popen(twistd("pxeboot", "--config", str(folder / "pxe.ini")),
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_for(base + "/health", process)
    return process, base


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_assignment_on_a_is_answered_by_b_after_a_is_killed(
    tmp_path: Path, pg_cluster: Any
) -> None:
    """An assignment made on A is what B answers with after A is killed with SIGKILL."""
    url = pg_cluster.new_database().replace("postgres@", f"postgres:{PASSWORD}@")
    a, base_a = start(tmp_path / "a", url)
    b, base_b = start(tmp_path / "b", url)
    try:
        health = get(base_b + "/health")
        assert health["status"] == "ok" and health["database"]["backend"] == "postgresql"
        assert PASSWORD not in json.dumps(health)
        request = urllib.request.Request(
            f"{base_a}/machines/{MAC}", method="PUT",
            data=json.dumps({"entry": "hello-ipxe", "once": True}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        assigned = time.monotonic()
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        deadline = time.monotonic() + 10
        while True:
            try:
                machine = get(f"{base_b}/machines/{MAC}")
                if machine["entry"] == "hello-ipxe":
                    break
            except urllib.error.HTTPError:
                pass
            assert time.monotonic() < deadline, "B never took A's assignment"
            time.sleep(0.05)
        print(f"\nB took A's assignment {time.monotonic() - assigned:.3f} s after A's answer")
        assert machine["state"] == "pending"
        with urllib.request.urlopen(f"{base_b}/pxe/boot.ipxe?mac={MAC}", timeout=5) as r:
            script = r.read().decode()
        assert "hello" in script, script  # B boots it into A's assignment
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(15)
    for name in ("a", "b"):
        assert PASSWORD not in (tmp_path / name / "log").read_text(errors="replace")

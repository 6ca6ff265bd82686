"""A real ``twistd -n pxeboot`` on 127.0.0.1 for the loopback tests (HTTP, CLI, web page)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.test_twistd import REPO, free_port, twistd, wait_for


@contextmanager
def running_pxeboot(folder: Path, token: str = "", tftp_port: int | None = None
                    ) -> Iterator[str]:
    """Start pxetwist over ``folder`` (its ``catalog/`` and ``tftproot/``) with DHCP off,
    HTTP on a free loopback port and TFTP on ``tftp_port`` (or off); yield its base URL
    once ``/health`` answers; stop it (by its PID) afterwards."""
    port = free_port()
    tftp = (f"[tftp]\nenabled = yes\nport = {tftp_port}\naddress = 127.0.0.1\n"
            if tftp_port is not None else "[tftp]\nenabled = no\n")
    (folder / "pxe.ini").write_text(
        "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n[dhcp]\nmode = off\n"
        f"{tftp}root = tftproot\n"
        f"[http]\nport = {port}\ninterface = 127.0.0.1\napi_token = {token}\n"
        "[catalog]\npaths = catalog\n")
    process = subprocess.Popen(twistd("pxeboot", "--config", str(folder / "pxe.ini")),
                               cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(base + "/health", process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)

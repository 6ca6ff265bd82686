"""HTTP on both families: an empty ``[http] interface`` answers on 127.0.0.1 and [::1]
at one port; an IPv6 address answers there alone. The real twistd, loopback only."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_twistd import REPO, free_port, twistd, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host")]


def serve(folder: Path, interface: str) -> tuple[subprocess.Popen[bytes], int]:
    for name in ("tftproot", "catalog"):
        (folder / name).mkdir(exist_ok=True)
    port = free_port()
    config = folder / "pxe.ini"
    config.write_text(
        "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n[dhcp]\nmode = off\n"
        "[tftp]\nenabled = no\nroot = tftproot\n"
        f"[http]\nport = {port}\ninterface = {interface}\n[catalog]\npaths = catalog\n")
    log = (folder / "log").open("wb")
    process = subprocess.Popen(twistd("pxeboot", "--config", str(config)), cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT)
    return process, port


@pytest.mark.parametrize("interface", ["", "::1"])
def test_health_over_both_families(tmp_path: Path, interface: str) -> None:
    """/health answers over [::1]; over 127.0.0.1 only when the interface is empty."""
    process, port = serve(tmp_path, interface)
    try:
        assert b'"status": "ok"' in wait_for(f"http://[::1]:{port}/health", process)
        if interface:
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        else:
            assert b'"status": "ok"' in wait_for(f"http://127.0.0.1:{port}/health",
                                                 process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)

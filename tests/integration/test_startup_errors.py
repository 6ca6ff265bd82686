"""Start-up failures of a real `twistd -n pxeboot`: one line naming the section and key
(and, for a port in use, who holds it), exit status non-zero (issue 13 item 21)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_twistd import REPO, free_port, twistd, write_config

pytestmark = pytest.mark.integration


def start_and_fail(config: Path) -> str:
    """Run twistd on ``config``, expect it to exit non-zero; its one stderr line."""
    result = subprocess.run(twistd("pxeboot", "--config", str(config)), cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_http_port_in_use_is_one_line_naming_the_key_and_holder(tmp_path: Path) -> None:
    """[http] port held by a socket of ours on 127.0.0.1: one line with the key, the port
    and our pid."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        line = start_and_fail(write_config(tmp_path, port))
    assert line.startswith(f"pxetwist: [http] port {port}")
    assert f"held by pid {os.getpid()}" in line and "in use" in line


def test_tftp_port_in_use_is_one_line_naming_the_key(tmp_path: Path) -> None:
    """[tftp] port held by a UDP socket of ours on 127.0.0.1: one line naming [tftp] port."""
    config = write_config(tmp_path, free_port())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        config.write_text(config.read_text().replace(
            "[tftp]\nenabled = no\n", f"[tftp]\nenabled = yes\nport = {port}\n"
                                      "address = 127.0.0.1\n"))
        line = start_and_fail(config)
    assert line.startswith(f"pxetwist: [tftp] port {port}")
    assert f"held by pid {os.getpid()}" in line


def test_unknown_interface_is_one_line_even_with_dhcp_off(tmp_path: Path) -> None:
    """A typo in [server] interface stops the server (DHCP off too) with one line."""
    config = write_config(tmp_path, free_port())
    config.write_text(config.read_text().replace("[server]\n", "[server]\ninterface = eht0\n"))
    line = start_and_fail(config)
    assert "[server] interface: no network interface 'eht0'" in line

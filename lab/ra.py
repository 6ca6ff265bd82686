"""An IPv6 router-advertisement-only responder for a lab network.

Without a router answering its solicitations, iPXE waits ~13 s for IPv6 configuration
before it boots (LAB-NOTES); dnsmasq ``--enable-ra`` with a ULA prefix in the lab's peer
namespace answers them, so a boot takes only what the servers make it take.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.netns import LabNet, ip

RA_PREFIX = "fd77:77::"


def start_ra(net: LabNet, folder: Path) -> subprocess.Popen[bytes]:
    """Start the responder in ``net``'s peer namespace (``net.up(with_peer=True)``);
    logs to ``folder/ra.log``. Stop it with :func:`stop`."""
    ip("-n", net.peer, "addr", "add", f"{RA_PREFIX}2/64", "dev", "pxlv1", "nodad")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(net.exec_argv(
        "dnsmasq", "--no-daemon", "--port=0", "--interface=pxlv1", "--bind-interfaces",
        "--conf-file=/dev/null", "--pid-file=", f"--dhcp-leasefile={folder}/ra.leases",
        "--enable-ra", f"--dhcp-range={RA_PREFIX},ra-only,64", "--log-facility=-",
        peer=True), stdout=(folder / "ra.log").open("ab"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop one process we started (by its PID) and reap it."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

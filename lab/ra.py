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


def start_radvd(net: LabNet, folder: Path, managed: bool, other: bool, autonomous: bool,
                prefix: str = "fd77::") -> subprocess.Popen[bytes]:
    """radvd in ``net``'s peer namespace advertising ``prefix``/64 with exactly these
    flags: M (addresses from DHCPv6), O (other options from DHCPv6), A (SLAAC). The peer
    gets ``prefix``2/64 and IPv6 forwarding (radvd wants it); logs to
    ``folder/radvd.log``. Stop it with :func:`stop`."""
    folder.mkdir(parents=True, exist_ok=True)
    ip("-n", net.peer, "addr", "add", f"{prefix}2/64", "dev", "pxlv1", "nodad")
    subprocess.run(net.exec_argv("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
                                 peer=True), check=True, capture_output=True, timeout=10)
    on = {True: "on", False: "off"}
    conf = folder / "radvd.conf"
    conf.write_text(
        "interface pxlv1 {\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n"
        f"  MaxRtrAdvInterval 10;\n  AdvManagedFlag {on[managed]};\n"
        f"  AdvOtherConfigFlag {on[other]};\n"
        f"  prefix {prefix}/64 {{\n    AdvOnLink on;\n    AdvAutonomous {on[autonomous]};\n"
        "  };\n};\n")
    return subprocess.Popen(net.exec_argv(
        "radvd", "-n", "-C", str(conf), "-p", str(folder / "radvd.pid"), "-m", "stderr",
        "-d", "1", peer=True), stdout=(folder / "radvd.log").open("ab"),
        stderr=subprocess.STDOUT)

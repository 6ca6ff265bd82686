"""dnsmasq as the site's plain DHCP server in a lab's peer namespace (beside pxetwist's
proxyDHCP). Stop it with :func:`lab.ra.stop`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.netns import LabNet


def start_site_dhcp(net: LabNet, folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    """dnsmasq handing out 10.77.0.160-200 on ``net``'s peer namespace, with ``extra``
    arguments (``--enable-ra ...``, ``--dhcp-boot=,,IP``); logs to ``folder/dnsmasq.log``."""
    return subprocess.Popen(net.exec_argv(
        "dnsmasq", "--no-daemon", "--port=0", "--interface=pxlv1", "--bind-interfaces",
        "--dhcp-range=10.77.0.160,10.77.0.200,12h", "--no-ping", "--conf-file=/dev/null",
        *extra, f"--dhcp-leasefile={folder}/dnsmasq.leases", "--pid-file=", "--log-dhcp",
        peer=True), stdout=(folder / "dnsmasq.log").open("wb"), stderr=subprocess.STDOUT)

"""A running pxetwist (the real twistd, full mode) in a namespace made here receives
100,000 random, truncated and mutated datagrams on its DHCP and TFTP ports, then still
answers a valid DHCPINFORM and RRQ, logged no traceback, and counted the drops.

Everything is sent to 127.0.0.1 inside the namespace; DHCP replies that broadcast go to
the namespace's own bridge, which has nothing attached. Needs root and iproute2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import pxetwist_server
from lab.netns import LabNet
from tests.markers import in_namespaces

REPO = Path(__file__).resolve().parents[2]
COUNT = 100_000

pytestmark = in_namespaces("ip", "curl", why="iproute2 and curl are needed")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[pxetwist_server.Server]:
    """pxetwist in full mode, DHCP on every interface of a fresh namespace, TFTP too."""
    net = LabNet().up()
    try:
        for name in ("tftproot", "catalog"):
            (tmp_path / name).mkdir()
        (tmp_path / "tftproot" / "probe.bin").write_bytes(b"p" * 1300)
        config = tmp_path / "pxe.ini"
        config.write_text(
            f"[server]\naddress = {net.address}\nstate = state.sqlite\n"
            "[dhcp]\nmode = full\nrange_start = 10.77.0.100\nrange_end = 10.77.0.150\n"
            "[tftp]\nroot = tftproot\nstall_timeout = 10\n"
            "[http]\nport = 8080\ninterface = 127.0.0.1\n"
            "[catalog]\npaths = catalog\nrescan_interval = 0\n")
        server = pxetwist_server.start(net, tmp_path, config)
        try:
            yield server
        finally:
            server.stop()
    finally:
        net.down()


def counters(server: pxetwist_server.Server) -> dict[str, float]:
    """The pxetwist_*_dropped_total samples from /metrics, by 'name{labels}'."""
    text = subprocess.run(server.net.exec_argv("curl", "-sS", "--max-time", "10",
                                               "http://127.0.0.1:8080/metrics"),
                          capture_output=True, text=True, timeout=20, check=True).stdout
    found = {}
    for line in text.splitlines():
        match = re.match(r"(pxetwist_(?:dhcp|tftp)_dropped_total\{[^}]*\}) (\S+)", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def total(samples: dict[str, float], protocol: str, exclude: str = "") -> float:
    return sum(v for k, v in samples.items()
               if k.startswith(f"pxetwist_{protocol}_") and (not exclude or exclude not in k))


def test_garbage_flood_is_dropped_counted_and_survived(lab: pxetwist_server.Server) -> None:
    """100,000 hostile datagrams: afterwards a valid INFORM and RRQ are answered, no
    traceback was logged, no internal error counted, and the drop counters grew by at
    least every datagram our codecs refuse that reached the server."""
    before = counters(lab)
    run = subprocess.run(
        lab.net.exec_argv(sys.executable, "-m", "tests.integration.garbage_client",
                          "--count", str(COUNT), "--seconds", "30", "--seed", "8"),
        cwd=REPO, capture_output=True, text=True, timeout=90,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    print(json.dumps(result))
    after = counters(lab)
    assert result["total"] >= COUNT * 0.99  # a few sendto() may fail with ENOBUFS
    assert result["dhcp_probe"]["answered"] and result["tftp_probe"]["answered"]
    assert result["tftp_probe"]["bytes"] == 1300
    log = (lab.folder / "pxetwist.log").read_text()
    assert "Traceback" not in log and "Unhandled" not in log
    assert not any("internal-error" in k and v for k, v in after.items())
    refused = result["rejected_by_codec"]
    lost = result["kernel_rcvbuf_drops"]
    dhcp_counted = total(after, "dhcp") - total(before, "dhcp")
    tftp_counted = total(after, "tftp", exclude="unknown-tid") - total(
        before, "tftp", exclude="unknown-tid")
    print(f"dropped and counted: dhcp {dhcp_counted:.0f} tftp {tftp_counted:.0f}; "
          f"log {len(log.splitlines())} lines")
    assert dhcp_counted + tftp_counted + lost >= refused["67"] + refused["4011"] + refused["69"]
    assert dhcp_counted > 0 and tftp_counted > 0

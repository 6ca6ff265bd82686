"""Real-VM boots: a namespace with a bridge, the real twistd, QEMU. Root only."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import payload, pxetwist_server
from lab.netns import LabNet, ip
from lab.qemu import qemu_missing
from lab.ra import RA_PREFIX, start_ra, stop
from lab.site_dhcp import start_site_dhcp

#: Kernel arguments an operator writes in entry.ini (issue 13 item 6): a query with `?` and
#: `&`, a literal `$`, and an iPXE setting iPXE must expand per machine.
OPERATOR_ARGS = "url=http://h/preseed.cfg?host=a&x=1 dollar=$5 BOOTIF=01-${mac:hexhyp}"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "e2e boots need root (network namespaces, taps)"
    if shutil.which("ip") is None or shutil.which("cpio") is None:
        return "iproute2 and cpio are needed"
    missing = qemu_missing()
    if missing:
        return missing
    try:
        payload.kernel_path()
        payload.busybox_path()
    except FileNotFoundError as e:
        return str(e)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def full_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pxetwist_server.Server]:
    """pxetwist in full mode on a lab bridge, with the payload entry (token 'full'), and an
    IPv6 router-advertisement responder in the peer namespace (no 13 s IPv6 wait)."""
    folder = tmp_path_factory.mktemp("lab-full")
    net = LabNet().up(with_peer=True)
    responder = None
    try:
        responder = start_ra(net, folder)
        config = pxetwist_server.write_config(folder, net, "full")
        payload.write_entry(folder / "catalog", "lab", "full")
        payload.write_entry(folder / "catalog", "args", "args", "Operator's arguments",
                            OPERATOR_ARGS)
        tftp_chain = folder / "catalog" / "via-tftp.ipxe"
        tftp_chain.write_text(
            "#!ipxe\n"
            "echo pxetwist-lab: chip ${netX/chip}\n"
            "iseq ${netX/chip} virtio-net && chain tftp://${next-server}/undionly.kpxe ||\n"
            "chain http://10.77.0.1:8080/containers/lab/boot.ipxe?mac=${mac:hexhyp}\n")
        with pxetwist_server.running(net, folder, config) as server:
            yield server
    finally:
        stop(responder)
        net.down()


@pytest.fixture(scope="module")
def proxy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pxetwist_server.Server]:
    """pxetwist in proxy mode beside dnsmasq as the site's plain DHCP server (peer ns),
    which also sends the IPv6 router advertisements."""

    folder: Path = tmp_path_factory.mktemp("lab-proxy")
    net = LabNet().up(with_peer=True)
    dnsmasq = None
    try:
        ip("-n", net.peer, "addr", "add", f"{RA_PREFIX}2/64", "dev", "pxlv1", "nodad")
        dnsmasq = start_site_dhcp(net, folder, "--enable-ra",
                                  f"--dhcp-range={RA_PREFIX},ra-only,64")
        config = pxetwist_server.write_config(folder, net, "proxy")
        payload.write_entry(folder / "catalog", "lab", "proxy")
        with pxetwist_server.running(net, folder, config) as server:
            yield server
    finally:
        stop(dnsmasq)
        net.down()

"""IPv6-only network boot (issue 17): an IPv6-only bridge (``fd77::1/64``, no IPv4 address
anywhere on it), radvd in the peer namespace with the M/O flags of the mode, the real
``twistd -n pxeboot`` with ``[dhcp] mode = off`` and ``[dhcp6]`` on, and QEMU.

Proofs: OVMF's own PXEv6 (DHCPv6 -> TFTP over IPv6 -> iPXE -> HTTP over IPv6 -> payload)
in ``full`` mode; OVMF's HTTPv6 boot; QEMU's iPXE ROM in ``stateless`` (O=1, SLAAC) and
``full`` (M=1) mode; and a per-MAC one-shot assignment over IPv6 (entry, then local).
Each boot passes when the payload's marker (with the entry's token) shows on the serial
console. Timings under TCG are in LAB-NOTES (iPXE ROM 22-27 s, OVMF 40-47 s).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import payload, pxetwist_server
from lab.netns import LabNet, ip
from lab.qemu import start_vm
from lab.ra import start_radvd, stop
from tests.e2e.test_boot import BOOT_TIMEOUT, boot

SERVER6 = "fd77::1"
#: OVMF: no 60 s PXEv4 attempt first.
NO_PXE4 = ("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n")
#: OVMF: HTTPv6 only (LAB-NOTES: the first HTTPv6 attempt fails before the link-local
#: address is ready, hence the boot menu's delay).
HTTP6_ONLY = ("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
              "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
              "-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=n",
              "-boot", "menu=on,splash-time=3000")

pytestmark = pytest.mark.skipif(shutil.which("radvd") is None, reason="radvd is needed")


def ipv6_only(net: LabNet) -> None:
    """No IPv4 address on the link; the bridge gets fd77::1/64 (no DAD)."""
    ip("-n", net.ns, "-4", "addr", "flush", "dev", net.bridge)
    ip("-n", net.peer, "-4", "addr", "flush", "dev", "pxlv1")
    ip("-n", net.ns, "addr", "add", f"{SERVER6}/64", "dev", net.bridge, "nodad")


def without_ipv4(config: Path, net: LabNet) -> None:
    """Drop ``[server] address`` from a lab config: no IPv4 address anywhere."""
    config.write_text(config.read_text().replace(f"address = {net.address}\n", ""))


def ipv6_lab(folder: Path, mode: str) -> Iterator[pxetwist_server.Server]:
    """The lab: the bridge loses its IPv4 address and gets fd77::1/64 (no DAD); radvd with
    M=1 O=1 A=0 for ``full`` or M=0 O=1 A=1 for ``stateless``; pxetwist with DHCPv6 only."""
    net = LabNet().up(with_peer=True)
    radvd = None
    try:
        ipv6_only(net)
        full = mode == "full"
        radvd = start_radvd(net, folder, managed=full, other=True, autonomous=not full)
        config = pxetwist_server.write_config(
            folder, net, "off",
            f"[dhcp6]\nmode = {mode}\naddress = {SERVER6}\nrange_start = fd77::100\n"
            "range_end = fd77::10b\nlease_time = 600\npreferred_lifetime = 300\n")
        without_ipv4(config, net)
        payload.write_entry(folder / "catalog", "lab", mode)
        with pxetwist_server.running(net, folder, config) as server:
            yield server
    finally:
        stop(radvd)
        net.down()


@pytest.fixture(scope="module")
def full6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pxetwist_server.Server]:
    yield from ipv6_lab(tmp_path_factory.mktemp("lab-ipv6-full"), "full")


@pytest.fixture(scope="module")
def stateless6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pxetwist_server.Server]:
    yield from ipv6_lab(tmp_path_factory.mktemp("lab-ipv6-stateless"), "stateless")


def events(server: pxetwist_server.Server, mac: str) -> list[dict[str, str]]:
    time.sleep(0.5)  # let the last events of the boot land
    found: list[dict[str, str]] = server.api("GET", f"/events?mac={mac}")["events"]
    return found


def test_ovmf_pxev6_full_mode(full6: pxetwist_server.Server) -> None:
    """1. OVMF's own PXEv6: DHCPv6 (an address) -> TFTP ipxe.efi over IPv6 -> iPXE ->
    HTTP script over IPv6 -> the payload; its MAC found from the EUI-64 source."""
    mac = "52:54:00:e6:00:01"
    assert boot(full6, mac, "uefi", "full", nic_rom=False, extra=NO_PXE4) is not None
    seen = events(full6, mac)
    stages = [e["stage"] for e in seen]
    assert "tftp.end" in stages and "http.kernel" in stages, stages
    assert any("MAC from eui-64" in e.get("detail", "") for e in seen)
    rows = full6.api("GET", "/leases")
    assert any(":" in str(row.get("ip", "")) for row in
               (rows if isinstance(rows, list) else rows.get("leases", [])))


def test_ovmf_httpv6_boot(full6: pxetwist_server.Server) -> None:
    """2. OVMF's HTTPv6 boot (no TFTP): option 16 HTTPClient echoed, option 59
    http://[fd77::1]:8080/...; ipxe.efi over HTTP, then iPXE boots the payload."""
    mac = "52:54:00:e6:00:02"
    assert boot(full6, mac, "uefi", "full", nic_rom=False, extra=HTTP6_ONLY) is not None
    assert "tftp.start" not in [e["stage"] for e in events(full6, mac)]


def test_ipxe_rom_full_mode(full6: pxetwist_server.Server) -> None:
    """3b. QEMU's iPXE ROM (BIOS) with M=1: an address and the script URL by DHCPv6."""
    assert boot(full6, "52:54:00:e6:00:03", "bios", "full") is not None


def test_per_mac_one_shot_over_ipv6(full6: pxetwist_server.Server) -> None:
    """4. An assigned one-shot entry boots over IPv6, then (installed) the machine boots
    local: the MAC is known although iPXE sends a DUID-UUID."""
    mac = "52:54:00:e6:00:04"
    full6.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": True})
    assert boot(full6, mac, "bios", "full") is not None
    assert full6.api("GET", f"/machines/{mac}")["state"] == "installing"
    full6.api("POST", f"/api/v1/machines/{mac}/installed")
    vm = start_vm(full6.net, full6.folder, mac, "bios")
    try:
        assert vm.wait_for("pxetwist: booting from local disk", BOOT_TIMEOUT) is not None
    finally:
        vm.stop()
    explain = full6.api("GET", f"/machines/{mac}/explain")
    [row] = [r for r in explain["dhcp"] if r["arch"] == "dhcpv6"]
    assert row["matched_on"] == "eui-64" and row["duid"].startswith("0004")


def test_ipxe_rom_stateless_mode(stateless6: pxetwist_server.Server) -> None:
    """3a. QEMU's iPXE ROM (BIOS) with O=1 and SLAAC: Information-Request with user class
    iPXE gets the script URL; nothing is leased."""
    mac = "52:54:00:e6:00:05"
    assert boot(stateless6, mac, "bios", "stateless") is not None
    assert any(e["stage"] == "proxy.ack" for e in events(stateless6, mac))


@pytest.fixture(scope="module")
def beside_site(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[pxetwist_server.Server]:
    """``stateless`` beside dnsmasq as the site's DHCPv6 server (peer namespace: it leases
    the addresses, sends the RAs with M=1, and hands iPXE the boot script URL, as README
    says a site server must)."""
    import subprocess

    folder = tmp_path_factory.mktemp("lab-ipv6-site")
    net = LabNet().up(with_peer=True)
    dnsmasq = None
    try:
        ipv6_only(net)
        ip("-n", net.peer, "addr", "add", "fd77::2/64", "dev", "pxlv1", "nodad")
        dnsmasq = subprocess.Popen(net.exec_argv(
            "dnsmasq", "--no-daemon", "--port=0", "--interface=pxlv1", "--bind-interfaces",
            "--conf-file=/dev/null", "--pid-file=", "--log-dhcp", "--enable-ra",
            "--dhcp-range=fd77::200,fd77::2ff,64,1h", f"--dhcp-leasefile={folder}/leases",
            "--dhcp-userclass=set:ipxe6,iPXE",
            f"--dhcp-option=tag:ipxe6,option6:bootfile-url,http://[{SERVER6}]:8080/pxe/boot.ipxe",
            peer=True), stdout=(folder / "dnsmasq.log").open("wb"), stderr=subprocess.STDOUT)
        config = pxetwist_server.write_config(
            folder, net, "off", f"[dhcp6]\nmode = stateless\naddress = {SERVER6}\n")
        without_ipv4(config, net)
        payload.write_entry(folder / "catalog", "lab", "site")
        with pxetwist_server.running(net, folder, config) as server:
            yield server
    finally:
        stop(dnsmasq)
        net.down()


def test_ovmf_pxev6_stateless_beside_site_server(beside_site: pxetwist_server.Server
                                                 ) -> None:
    """OVMF takes its address from the site's server and its boot file from pxetwist's
    proxy Advertise and the Reply on port 4011; TFTP from pxetwist, then the chained iPXE
    (boot script URL from the site server) boots the payload over IPv6."""
    mac = "52:54:00:e6:00:06"
    assert boot(beside_site, mac, "uefi", "site", nic_rom=False, extra=NO_PXE4) is not None
    stages = [e["stage"] for e in events(beside_site, mac)]
    assert "proxy.offer" in stages and "proxy.ack" in stages, stages
    # OVMF asks port 4011 from its link-local address and fetches by TFTP from the site
    # server's lease, so the transfer is not charged to its MAC: look at every event
    every = beside_site.api("GET", "/events")["events"]
    assert any(e["stage"] == "tftp.end" and e["detail"].startswith("ipxe.efi complete")
               for e in every), every

"""Secure Boot machines boot through the signed chain (issue 14): OVMF with Microsoft keys
and Secure Boot on -> Debian's Microsoft-signed shim -> Debian's signed network GRUB ->
the GRUB config pxetwist renders from the machine's boot plan -> Debian's signed kernel
with the payload initrd, all over TFTP from pxetwist. QEMU's iPXE option ROM is off
(``romfile=``): OVMF would run the unsigned ROM driver, which breaks shim's TFTP."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator

import pytest

from lab import payload, pxetwist_server
from lab.netns import LabNet
from lab.qemu import OVMF_4M_CODE, OVMF_SB_CODE, start_vm
from lab.ra import stop
from lab.site_dhcp import start_site_dhcp
from pxetwist.config import BootConfig
from pxetwist.signed import FAMILIES, signed_files

BOOT_TIMEOUT = 240
#: MiB of guest memory: GRUB loads the whole kernel and initrd before the EFI stub unpacks.
MEMORY = 512
#: Arguments whose every character GRUB must pass as written: `;`, `$`, braces, `#`, and
#: an iPXE setting the per-machine config expands.
GRUB_ARGS = "semi=a;b dollar=$5 brace={x} hash=#1 BOOTIF=01-${mac:hexhyp}"


def _missing() -> str | None:
    boot = BootConfig(unknown="menu", menu_timeout=0, api_url="")
    found = signed_files(boot)
    x64 = FAMILIES[0]
    for name in (x64.shim, x64.grub):
        if name not in found:
            return f"{name} not found (install shim-signed and grub-efi-amd64-signed)"
    for path in (OVMF_SB_CODE, OVMF_4M_CODE):
        if not path.exists():
            return f"{path} missing (install ovmf)"
    try:
        payload.secure_boot_kernel_path()
    except FileNotFoundError as e:
        return str(e)
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


@pytest.fixture(scope="module")
def sb_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pxetwist_server.Server]:
    """pxetwist in full mode with ``efi_loader = shim``; entries ``lab`` (token sb) and
    ``second`` (token menu, the menu's default); the menu waits 2 s."""
    folder = tmp_path_factory.mktemp("lab-sb")
    net = LabNet().up()
    try:
        config = pxetwist_server.write_config(folder, net, "full", "efi_loader = shim\n")
        text = config.read_text().replace("menu_timeout = 0", "menu_timeout = 2")
        config.write_text(text)
        kernel = payload.secure_boot_kernel_path()
        payload.write_entry(folder / "catalog", "lab", "sb", "Lab payload", GRUB_ARGS, kernel)
        payload.write_entry(folder / "catalog", "second", "menu", "Second 'quoted' {x}; $y",
                            kernel=kernel)
        with pxetwist_server.running(net, folder, config) as server:
            server.api("POST", "/pxe/second/menu", {"default": True})
            yield server
    finally:
        net.down()


@pytest.fixture(scope="module")
def sb_proxy_lab(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[pxetwist_server.Server]:
    """pxetwist in proxy mode with ``efi_loader = shim`` beside dnsmasq as the site's DHCP
    server (peer namespace), which names pxetwist as next-server (``dhcp-boot=,,IP``): the
    signed GRUB takes its TFTP server from the site's reply."""
    folder = tmp_path_factory.mktemp("lab-sb-proxy")
    net = LabNet().up(with_peer=True)
    dnsmasq = None
    try:
        dnsmasq = start_site_dhcp(net, folder, f"--dhcp-boot=,,{net.address}")
        config = pxetwist_server.write_config(folder, net, "proxy", "efi_loader = shim\n")
        payload.write_entry(folder / "catalog", "lab", "proxy", "Lab payload",
                            kernel=payload.secure_boot_kernel_path())
        with pxetwist_server.running(net, folder, config) as server:
            yield server
    finally:
        stop(dnsmasq)
        net.down()


#: OVMF with its PXE boot options removed: HTTPv4 Boot starts at once (LAB-NOTES).
HTTP_BOOT_ONLY = ("-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                  "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")


def _boot(server: pxetwist_server.Server, mac: str, secure_boot: bool | None, wait_for: str,
          timeout: float = BOOT_TIMEOUT, extra: tuple[str, ...] = ()
          ) -> tuple[float | None, str]:
    vm = start_vm(server.net, server.folder, mac, "uefi", nic_rom=False,
                  secure_boot=secure_boot, memory=MEMORY, extra=extra)
    try:
        took = vm.wait_for(wait_for, timeout)
        serial = vm.serial.read_bytes().decode("utf-8", "replace")
        return took, re.sub(r"Downloading\.\.\.\d+%\s*", "", serial)
    finally:
        vm.stop()


def _transfers(server: pxetwist_server.Server, mac: str) -> list[str]:
    time.sleep(0.5)
    events = server.api("GET", f"/events?mac={mac}")["events"]
    return [e["detail"] for e in events if e["stage"] == "tftp.end"]


def _cmdline(serial: str) -> str:
    found = re.search(r"PXELAB-CMDLINE (.*)", serial)
    assert found, serial[-2000:]
    return found.group(1).strip()


def test_secure_boot_shim_grub_assigned_entry(sb_lab: pxetwist_server.Server) -> None:
    """Proof 1: Secure Boot on, shim -> GRUB -> the assigned linux entry over TFTP; every
    argument arrives exactly, ${mac:hexhyp} expanded for this machine."""
    mac = "52:54:00:5b:00:01"
    sb_lab.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": False})
    took, serial = _boot(sb_lab, mac, True, f"{payload.MARKER} sb")
    assert took is not None, serial[-3000:]
    line = _cmdline(serial)
    assert line.endswith("semi=a;b dollar=$5 brace={x} hash=#1 BOOTIF=01-52-54-00-5b-00-01")
    done = " ".join(_transfers(sb_lab, mac))
    for name in ("shimx64.efi complete", "grubx64.efi complete", "grub/grub.cfg complete",
                 "grub/pxetwist/52:54:00:5b:00:01.cfg complete",
                 "pxetwist/entries/lab/vmlinuz complete"):
        assert name in done, done
    print(f"secure boot, shim -> GRUB -> entry: marker after {took:.1f} s")


def test_secure_boot_grub_menu_boots_default(sb_lab: pxetwist_server.Server) -> None:
    """Proof 2: no assignment, unknown = menu: GRUB's menu lists the offered entries in
    order and boots the default (``second``) after the timeout."""
    took, serial = _boot(sb_lab, "52:54:00:5b:00:02", True, f"{payload.MARKER} menu")
    assert took is not None, serial[-3000:]
    print(f"secure boot, GRUB menu default: marker after {took:.1f} s")


def test_secure_boot_refuses_ipxe(sb_lab: pxetwist_server.Server) -> None:
    """Proof 3: a machine on the iPXE loader under Secure Boot: the firmware refuses the
    unsigned ipxe.efi ("Access Denied"), and explain says it cannot boot there."""
    mac = "52:54:00:5b:00:03"
    sb_lab.api("PUT", f"/machines/{mac}", {"loader": "ipxe"})
    explained = sb_lab.api("GET", f"/machines/{mac}/explain")["secure_boot"]
    assert explained["loader"] == "ipxe"
    assert any("cannot boot where Secure Boot is on" in n for n in explained["notes"])
    took, serial = _boot(sb_lab, mac, True, "Access Denied", 120)
    assert took is not None, serial[-3000:]
    assert "ipxe.efi complete" in " ".join(_transfers(sb_lab, mac))
    print(f"secure boot refuses ipxe.efi after {took:.1f} s")


def test_secure_boot_off_shim_chain_works(sb_lab: pxetwist_server.Server) -> None:
    """Proof 4: Secure Boot off, the same shim chain boots (one setting for a mixed
    fleet)."""
    mac = "52:54:00:5b:00:04"
    sb_lab.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": False})
    took, serial = _boot(sb_lab, mac, False, f"{payload.MARKER} sb")
    assert took is not None, serial[-3000:]
    print(f"secure boot off, shim -> GRUB -> entry: marker after {took:.1f} s")



def test_secure_boot_shim_grub_proxy_mode(sb_proxy_lab: pxetwist_server.Server) -> None:
    """Proof 1, proxy mode: dnsmasq hands out the address and names pxetwist as
    next-server; pxetwist's proxyDHCP gives shimx64.efi; shim -> GRUB -> the entry; explain
    tells the operator about next-server."""
    mac = "52:54:00:5b:00:11"
    sb_proxy_lab.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": False})
    notes = sb_proxy_lab.api("GET", f"/machines/{mac}/explain")["secure_boot"]["notes"]
    assert any("next-server" in note for note in notes)
    took, serial = _boot(sb_proxy_lab, mac, True, f"{payload.MARKER} proxy")
    assert took is not None, serial[-3000:]
    # TFTP fetches carry no MAC and proxy mode leases no address: look at every transfer
    time.sleep(0.5)
    events = sb_proxy_lab.api("GET", "/events")["events"]
    done = " ".join(e["detail"] for e in events if e["stage"] == "tftp.end")
    assert "grub/pxetwist/52:54:00:5b:00:11.cfg complete" in done, done
    print(f"secure boot, proxy mode beside dnsmasq: marker after {took:.1f} s")


def test_http_boot_secure_boot_off_ipxe_by_url(sb_lab: pxetwist_server.Server) -> None:
    """Proof 5, Secure Boot off: OVMF's own HTTP Boot (no TFTP at all) gets ipxe.efi by URL
    (a machine on the iPXE loader), iPXE boots the assigned entry."""
    mac = "52:54:00:5b:00:21"
    sb_lab.api("PUT", f"/machines/{mac}", {"entry": "lab", "loader": "ipxe"})
    took, serial = _boot(sb_lab, mac, False, f"{payload.MARKER} sb", extra=HTTP_BOOT_ONLY)
    assert took is not None, serial[-3000:]
    assert "URI: http://10.77.0.1:8080/files/ipxe.efi" in serial
    assert not _transfers(sb_lab, mac)
    print(f"HTTP Boot, Secure Boot off, ipxe.efi by URL: marker after {took:.1f} s")


def test_http_boot_secure_boot_on_signed_chain_image(sb_lab: pxetwist_server.Server) -> None:
    """Proof 5, Secure Boot on: OVMF's HTTP Boot gets the FAT image of this machine's plan
    (shim as BOOTX64.EFI, GRUB, grub.cfg, kernel and initrd) and boots it as a RAM disk;
    no TFTP."""
    mac = "52:54:00:5b:00:22"
    sb_lab.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": False})
    took, serial = _boot(sb_lab, mac, True, f"{payload.MARKER} sb", extra=HTTP_BOOT_ONLY)
    assert took is not None, serial[-3000:]
    assert f"/pxe/secureboot/{mac}-x64.img" in serial
    assert not _transfers(sb_lab, mac)
    print(f"HTTP Boot, Secure Boot on, FAT image: marker after {took:.1f} s")


#: Debian's signed netboot tree (debian-installer-12-netboot-amd64).
DI_TREE = payload.DI_KERNEL.parent


@pytest.mark.skipif(not (DI_TREE / "initrd.gz").is_file(),
                    reason="debian-installer-12-netboot-amd64 is not installed")
def test_secure_boot_debian_installer(sb_lab: pxetwist_server.Server) -> None:
    """Proof 7: an entry made from the real Debian netboot tree (its signed kernel and
    40 MB initrd) boots its installer under Secure Boot through pxetwist's GRUB config,
    until the installer's first screen (priority=low: its main menu) shows on the serial
    console."""
    entry = sb_lab.folder / "catalog" / "debian-installer"
    entry.mkdir(exist_ok=True)
    for name in ("linux", "initrd.gz"):
        shutil.copy(DI_TREE / name, entry / name)
    (entry / "entry.ini").write_text(
        "[entry]\nname = Debian 12 installer\nkind = linux\nkernel = linux\n"
        "initrd = initrd.gz\ncmdline = console=ttyS0,115200n8 priority=low ---\n")
    sb_lab.api("POST", "/catalog/refresh")
    mac = "52:54:00:5b:00:31"
    sb_lab.api("PUT", f"/machines/{mac}", {"entry": "debian-installer", "once": False})
    vm = start_vm(sb_lab.net, sb_lab.folder, mac, "uefi", nic_rom=False, secure_boot=True,
                  memory=1024)
    try:
        took = vm.wait_for("Debian installer main menu", 300)
        serial = vm.serial.read_bytes().decode("utf-8", "replace")
    finally:
        vm.stop()
    assert took is not None, re.sub(r"Downloading\.\.\.\d+%\s*", "", serial)[-3000:]
    assert "Secure boot enabled" in serial or "Secure Boot is enabled" in serial
    print(f"secure boot, Debian installer's first screen after {took:.1f} s")


def test_arm64_shim_grub_entry(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Proof 6: arm64 (qemu-system-aarch64, AAVMF with Microsoft keys, TCG): option 93 =
    11 gets shimaa64.efi, shim -> grubaa64.efi -> Debian's arm64 kernel + the payload."""
    from lab import arm64

    try:
        tree = arm64.root()
    except RuntimeError as e:
        pytest.skip(str(e))
    folder = tmp_path_factory.mktemp("lab-arm64")
    net = LabNet().up()
    try:
        config = pxetwist_server.write_config(
            folder, net, "full",
            f"efi_loader = shim\nshim_dir = {tree}/usr/lib/shim\n"
            f"grub_dir = {tree}/usr/lib/grub\n")
        entry = folder / "catalog" / "arm64"
        payload.build(entry, kernel=arm64.kernel(tree), busybox=tree / "bin" / "busybox",
                      console="ttyAMA0")
        (entry / "entry.ini").write_text(
            "[entry]\nname = arm64 payload\nkind = linux\nkernel = vmlinuz\n"
            "initrd = initrd.img\ncmdline = console=ttyAMA0 panic=-1 pxelab_token=arm64\n")
        server = pxetwist_server.start(net, folder, config)
        try:
            mac = "52:54:00:5b:00:41"
            server.api("PUT", f"/machines/{mac}", {"entry": "arm64", "once": False})
            vm = arm64.start_vm(net, folder, mac, secure_boot=True)
            try:
                took = vm.wait_marker("arm64", 420)
                serial = vm.serial.read_bytes().decode("utf-8", "replace")
            finally:
                vm.stop()
            assert took is not None, re.sub(r"Downloading\.\.\.\d+%\s*", "", serial)[-3000:]
            done = " ".join(_transfers(server, mac))
            assert "shimaa64.efi complete" in done and "grubaa64.efi complete" in done, done
            print(f"arm64, Secure Boot on, shim -> GRUB -> entry: marker after {took:.1f} s")
        finally:
            server.stop()
    finally:
        net.down()

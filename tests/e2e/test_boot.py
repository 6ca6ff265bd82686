"""Real machines boot through pxetwist: QEMU (iPXE ROM, and OVMF's own PXE client) in a
network namespace, against the real `twistd -n pxeboot`. Each boot has a fresh MAC and
passes when the payload's marker (with the entry's token) shows on the serial console."""

from __future__ import annotations

import time

import pytest

from lab import pxetwist_server
from lab.qemu import start_vm

BOOT_TIMEOUT = 150


def boot(server: pxetwist_server.Server, mac: str, firmware: str, token: str,
         nic_rom: bool = True, extra: tuple[str, ...] = ()) -> float | None:
    vm = start_vm(server.net, server.folder, mac, firmware, nic_rom=nic_rom, extra=extra)
    try:
        return vm.wait_marker(token, BOOT_TIMEOUT)
    finally:
        vm.stop()


def stages(server: pxetwist_server.Server, mac: str) -> list[str]:
    time.sleep(0.5)  # let the last events of the boot land
    return [e["stage"] for e in server.api("GET", f"/events?mac={mac}")["events"]]


def test_full_mode_bios(full_lab: pxetwist_server.Server) -> None:
    """1. Full mode, BIOS: DHCP -> HTTP boot script -> menu default -> kernel+initrd."""
    assert boot(full_lab, "52:54:00:e2:00:01", "bios", "full") is not None


def test_full_mode_uefi_ipxe_rom(full_lab: pxetwist_server.Server) -> None:
    """2. Full mode, UEFI with QEMU's iPXE ROM."""
    assert boot(full_lab, "52:54:00:e2:00:02", "uefi", "full") is not None


def test_full_mode_uefi_ovmf_pxe(full_lab: pxetwist_server.Server) -> None:
    """3. OVMF's own PXE client: DHCP -> TFTP ipxe.efi (size probe, windowsize 4) -> iPXE
    -> HTTP -> kernel."""
    mac = "52:54:00:e2:00:03"
    assert boot(full_lab, mac, "uefi", "full", nic_rom=False) is not None
    seen = stages(full_lab, mac)
    assert "tftp.start" in seen and "tftp.end" in seen


def test_bios_through_tftp_bootloader(full_lab: pxetwist_server.Server) -> None:
    """4. The ROM's iPXE chains undionly.kpxe over TFTP from pxetwist; the chained iPXE
    boots the entry."""
    mac = "52:54:00:e2:00:04"
    full_lab.api("PUT", f"/machines/{mac}", {"entry": "via-tftp-ipxe", "once": False})
    assert boot(full_lab, mac, "bios", "full") is not None
    events = full_lab.api("GET", f"/events?mac={mac}")["events"]
    transfers = [e["detail"] for e in events if e["stage"] == "tftp.end"]
    assert any(d.startswith("undionly.kpxe complete") for d in transfers), transfers


def test_one_shot_install_then_local(full_lab: pxetwist_server.Server) -> None:
    """6. Assigned once: the first boot boots the entry; after installed, the next boot
    gets the local-boot answer (no marker)."""
    mac = "52:54:00:e2:00:06"
    full_lab.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": True})
    assert boot(full_lab, mac, "bios", "full") is not None
    assert full_lab.api("GET", f"/machines/{mac}")["state"] == "installing"
    full_lab.api("POST", f"/api/v1/machines/{mac}/installed")
    vm = start_vm(full_lab.net, full_lab.folder, mac, "bios")
    try:
        assert vm.wait_for("pxetwist: booting from local disk", BOOT_TIMEOUT) is not None
        assert vm.wait_marker("full", 5) is None
    finally:
        vm.stop()


def test_events_tell_the_whole_story(full_lab: pxetwist_server.Server) -> None:
    """7. A boot's events, for its MAC, in order: offer, ack, script, kernel, initrd."""
    mac = "52:54:00:e2:00:07"
    assert boot(full_lab, mac, "bios", "full") is not None
    seen = stages(full_lab, mac)
    story = ["dhcp.offer", "dhcp.ack", "http.script", "http.kernel", "http.initrd"]
    positions = [seen.index(stage) for stage in story]
    assert positions == sorted(positions), seen


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_proxy_mode_beside_dnsmasq(proxy_lab: pxetwist_server.Server, firmware: str) -> None:
    """5. Proxy mode: dnsmasq hands out the address, pxetwist only the boot options."""
    mac = "52:54:00:e2:05:0" + ("1" if firmware == "bios" else "2")
    assert boot(proxy_lab, mac, firmware, "proxy") is not None
    seen = stages(proxy_lab, mac)
    assert "proxy.offer" in seen and "dhcp.ack" not in seen
    assert proxy_lab.api("GET", "/leases")["leases"] == []


def test_operator_kernel_arguments_arrive_exactly(full_lab: pxetwist_server.Server) -> None:
    """8. entry.ini's cmdline reaches the kernel as written (issue 13 item 6): `?`, `&` and
    a literal `$` unchanged, and the operator's `${mac:hexhyp}` expanded by iPXE."""
    mac = "52:54:00:e2:00:08"
    full_lab.api("PUT", f"/machines/{mac}", {"entry": "args", "once": False})
    vm = start_vm(full_lab.net, full_lab.folder, mac, "bios")
    try:
        assert vm.wait_marker("args", BOOT_TIMEOUT) is not None
        log = vm.serial.read_bytes().decode("utf-8", "replace")
    finally:
        vm.stop()
    lines = [line for line in log.splitlines() if line.startswith("PXELAB-CMDLINE ")]
    assert lines, log[-2000:]
    arguments = lines[-1].split()[1:]
    assert "url=http://h/preseed.cfg?host=a&x=1" in arguments, arguments
    assert "dollar=$5" in arguments, arguments
    assert "BOOTIF=01-52-54-00-e2-00-08" in arguments, arguments

"""Starting a QEMU VM on a lab tap and waiting for the payload's marker on its serial log.

TCG only (KVM is not usable on these machines). BIOS: SeaBIOS with the serial console
enabled through fw_cfg ``etc/sercon-port``; UEFI: OVMF. The NIC is virtio with QEMU's
iPXE ROM, or with no ROM so that OVMF's own PXE client boots.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from attrs import define

from lab.netns import LabNet
from lab.payload import MARKER

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
#: Secure Boot on, Microsoft keys enrolled (needs q35 with SMM and secure pflash).
OVMF_SB_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
OVMF_SB_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
#: The same 4M build with Secure Boot off (no keys enrolled).
OVMF_4M_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_4M_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def qemu_missing() -> str | None:
    """Why QEMU boots cannot run here, or ``None``."""
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86 is not installed"
    if not Path("/usr/lib/ipxe/qemu/efi-virtio.rom").exists():
        return "ipxe-qemu is not installed"
    if not OVMF_CODE.exists():
        return "ovmf is not installed"
    return None


@define
class VM:
    process: subprocess.Popen[bytes]
    serial: Path
    started: float

    def wait_for(self, text: str, timeout: float) -> float | None:
        """Seconds from start until ``text`` shows on the serial log, or ``None``."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.serial.exists() and text.encode() in self.serial.read_bytes():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                return (time.monotonic() - self.started
                        if text.encode() in self.serial.read_bytes() else None)
            time.sleep(0.2)
        return None

    def wait_marker(self, token: str, timeout: float = 120) -> float | None:
        return self.wait_for(f"{MARKER} {token}", timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_vm(net: LabNet, folder: Path, mac: str, firmware: str = "bios", *,
             nic_rom: bool = True, secure_boot: bool | None = None, memory: int = 256,
             extra: tuple[str, ...] = ()) -> VM:
    """Boot a VM from the network on a new tap of ``net``. ``firmware``: bios | uefi;
    ``memory`` in MiB;
    ``extra``: more QEMU arguments (fw_cfg switches, ``-boot`` menu).

    :param secure_boot: UEFI on q35 with the 4M OVMF build: ``True`` with Secure Boot on
        (Microsoft keys), ``False`` with it off; ``None``: the plain OVMF build."""
    tap = net.add_tap()
    folder.mkdir(parents=True, exist_ok=True)
    serial = folder / f"serial-{mac.replace(':', '')}.log"
    serial.unlink(missing_ok=True)
    device = f"virtio-net-pci,netdev=n0,mac={mac}"
    if not nic_rom:
        device += ",romfile="
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(memory), "-display", "none",
        "-monitor", "none", "-serial", f"file:{serial}", "-no-reboot",
        "-boot", "order=n,strict=on",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no", "-device", device,
    ]
    if firmware == "bios":
        port_file = folder / "sercon-port"
        port_file.write_bytes(b"\xf8\x03")
        argv += ["-fw_cfg", f"name=etc/sercon-port,file={port_file}"]
    else:
        code, template = OVMF_CODE, OVMF_VARS
        if secure_boot is not None:
            code, template = ((OVMF_SB_CODE, OVMF_SB_VARS) if secure_boot
                              else (OVMF_4M_CODE, OVMF_4M_VARS))
            argv += ["-machine", "q35,smm=on",
                     "-global", "driver=cfi.pflash01,property=secure,value=on"]
        variables = folder / f"OVMF_VARS-{mac.replace(':', '')}.fd"
        shutil.copy(template, variables)
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={code}",
                 "-drive", f"if=pflash,format=raw,file={variables}"]
    argv += extra
    log = (folder / f"qemu-{mac.replace(':', '')}.log").open("wb")
    process = subprocess.Popen(net.exec_argv(*argv), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    return VM(process, serial, time.monotonic())

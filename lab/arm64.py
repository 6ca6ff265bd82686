"""arm64 boots: Debian's arm64 shim, network GRUB, kernel and busybox, fetched as
arm64-architecture packages on an amd64 machine (``apt-get download``, ``dpkg -x``) into a
cache folder, and ``qemu-system-aarch64`` with AAVMF under TCG."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from lab.netns import LabNet
from lab.qemu import VM

CACHE = Path("/var/cache/pxetwist-lab-arm64")
PACKAGES = ("grub-efi-arm64-signed:arm64", "shim-signed:arm64", "linux-image-arm64:arm64",
            "busybox-static:arm64")
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
AAVMF_SB_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.ms.fd")
AAVMF_SB_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.ms.fd")


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 300) -> None:
    subprocess.run(argv, cwd=cwd, check=True, capture_output=True, timeout=timeout)


def root() -> Path:
    """The extracted arm64 packages (``usr/lib/shim``, ``usr/lib/grub``, ``boot``,
    ``bin/busybox``), fetched once.

    :raises RuntimeError: with the reason when they cannot be had here.
    """
    tree = CACHE / "root"
    if (tree / "bin" / "busybox").is_file() and list(tree.glob("boot/vmlinuz-*")):
        return tree
    if shutil.which("qemu-system-aarch64") is None or not AAVMF_CODE.is_file():
        raise RuntimeError("qemu-system-arm and qemu-efi-aarch64 are needed")
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        if "arm64" not in subprocess.run(["dpkg", "--print-foreign-architectures"],
                                         capture_output=True, text=True).stdout.split():
            _run(["dpkg", "--add-architecture", "arm64"])
            _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "download", *PACKAGES], cwd=debs)
        meta = next(debs.glob("linux-image-arm64_*.deb"))
        depends = subprocess.run(["dpkg-deb", "-f", str(meta), "Depends"], capture_output=True,
                                 text=True, check=True).stdout
        kernel_package = depends.split("(")[0].split(",")[0].strip()
        _run(["apt-get", "download", f"{kernel_package}:arm64"], cwd=debs)
        partial = CACHE / "root.part"
        shutil.rmtree(partial, ignore_errors=True)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(partial)])
        for modules in ("lib/modules", "usr/lib/modules", *(str(p.relative_to(partial)) for p in
                        partial.glob("usr/lib/linux-image-*"))):  # ~330 MB nobody boots here
            shutil.rmtree(partial / modules, ignore_errors=True)
        shutil.rmtree(tree, ignore_errors=True)
        partial.rename(tree)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, StopIteration,
            OSError) as e:
        raise RuntimeError(f"arm64 packages could not be fetched: {e}") from None
    for deb in debs.glob("*.deb"):
        deb.unlink()  # keep only the extracted tree (the kernel .deb is ~60 MB)
    return tree


def kernel(tree: Path) -> Path:
    return sorted(tree.glob("boot/vmlinuz-*"))[-1]


def start_vm(net: LabNet, folder: Path, mac: str, secure_boot: bool) -> VM:
    """An arm64 ``virt`` VM booting from the network with AAVMF's own PXE client."""
    tap = net.add_tap()
    serial = folder / f"serial-{mac.replace(':', '')}.log"
    serial.unlink(missing_ok=True)
    code, template = (AAVMF_SB_CODE, AAVMF_SB_VARS) if secure_boot else (AAVMF_CODE,
                                                                          AAVMF_VARS)
    variables = folder / f"AAVMF_VARS-{mac.replace(':', '')}.fd"
    shutil.copy(template, variables)
    argv = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-accel", "tcg",
        "-m", "1024", "-display", "none", "-monitor", "none", "-serial", f"file:{serial}",
        "-no-reboot",
        "-drive", f"if=pflash,format=raw,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,file={variables}",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile=",
    ]
    log = (folder / f"qemu-{mac.replace(':', '')}.log").open("wb")
    process = subprocess.Popen(net.exec_argv(*argv), stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    return VM(process, serial, time.monotonic())

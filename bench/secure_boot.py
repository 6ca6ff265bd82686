"""Secure Boot on: seconds from QEMU start to the payload's marker through shim -> GRUB ->
kernel, pxetwist (``efi_loader = shim``, GRUB config rendered per machine) against dnsmasq
serving the same signed files with a static grub.cfg, same run.

    python bench/secure_boot.py [--boots 3]       (as root)

Both servers run in lab namespaces of their own (10.77.0.1 on a bridge), full mode, no
ping; OVMF with Microsoft keys (``OVMF_CODE_4M.ms.fd``), QEMU's iPXE ROM off. Same
payload (the installer's signed kernel and the busybox initrd). Boots alternate between
the servers; every process started here is stopped by its PID and the namespaces are
removed (also on failure). Prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.boot import wait_marker
from lab import payload, pxetwist_server
from lab.netns import LabNet
from lab.qemu import start_vm
from lab.ra import stop

SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
GRUB_CFG = ("linux /vmlinuz console=ttyS0 panic=-1 pxelab_token=dnsmasq\n"
            "initrd /initrd.img\nboot\n")


def dnsmasq_lab(folder: Path) -> tuple[LabNet, subprocess.Popen[bytes]]:
    root = folder / "tftp"
    (root / "grub").mkdir(parents=True)
    shutil.copy(SHIM, root / "shimx64.efi")
    shutil.copy(GRUB, root / "grubx64.efi")
    (root / "grub" / "grub.cfg").write_text(GRUB_CFG)
    payload.build(root, kernel=payload.secure_boot_kernel_path())
    net = LabNet().up()
    try:
        process = subprocess.Popen(net.exec_argv(
            "dnsmasq", "--no-daemon", "--port=0", f"--interface={net.bridge}",
            "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.150,12h", "--no-ping",
            "--conf-file=/dev/null", "--enable-tftp", f"--tftp-root={root}",
            "--dhcp-boot=shimx64.efi", f"--dhcp-leasefile={folder}/leases", "--pid-file="),
            stdout=(folder / "dnsmasq.log").open("wb"), stderr=subprocess.STDOUT)
    except BaseException:
        net.down()
        raise
    return net, process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boots", type=int, default=3)
    boots = parser.parse_args().boots
    root = Path(tempfile.mkdtemp(prefix="pxetwist-sb-bench-"))
    times: dict[str, list[float]] = {"pxetwist": [], "dnsmasq": []}
    mac_of = {"pxetwist": "52:54:00:5b:b0:{:02x}", "dnsmasq": "52:54:00:5b:b1:{:02x}"}
    net = LabNet().up()
    server = None
    site: tuple[LabNet, subprocess.Popen[bytes]] | None = None
    try:
        folder = root / "pxetwist"
        config = pxetwist_server.write_config(folder, net, "full", "efi_loader = shim\n")
        payload.write_entry(folder / "catalog", "lab", "pxetwist",
                            kernel=payload.secure_boot_kernel_path())
        server = pxetwist_server.start(net, folder, config)
        site = dnsmasq_lab(root / "dnsmasq")
        for i in range(boots):
            for name in ("pxetwist", "dnsmasq"):
                mac = mac_of[name].format(i)
                if name == "pxetwist":
                    server.api("PUT", f"/machines/{mac}", {"entry": "lab"})
                lab_net, lab_folder = (net, folder) if name == "pxetwist" else (site[0],
                                                                                  root / "dnsmasq")
                vm = start_vm(lab_net, lab_folder, mac, "uefi", nic_rom=False,
                              secure_boot=True, memory=512)
                try:
                    took = wait_marker(vm, name, 180)
                finally:
                    vm.stop()
                print(f"{name} boot {i + 1}: {took if took is None else round(took, 2)} s",
                      flush=True)
                if took is not None:
                    times[name].append(took)
    finally:
        if server is not None:
            server.stop()
        if site is not None:
            stop(site[1])
            site[0].down()
        net.down()
        shutil.rmtree(root, ignore_errors=True)
    print("| server | boots | median s | min s | max s |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        if values:
            print(f"| {name} | {len(values)} | {statistics.median(values):.2f} | "
                  f"{min(values):.2f} | {max(values):.2f} |")
    if times["pxetwist"] and times["dnsmasq"]:
        ratio = statistics.median(times["pxetwist"]) / statistics.median(times["dnsmasq"])
        print(f"| ratio pxetwist/dnsmasq (median) | | {ratio:.2f} | | |")


if __name__ == "__main__":
    main()

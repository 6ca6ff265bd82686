"""Seconds from QEMU start to the payload's marker: pxetwist against dnsmasq, same run.

    python bench/boot.py [--boots 3]       (as root)

Both servers run in lab namespaces of their own (10.77.0.1 on a bridge) and boot the same
payload. dnsmasq is tuned as LAB-NOTES says: option 60 PXEClient in offers to iPXE, no
ping, and iPXE is sent straight to a static script on nginx. pxetwist has the MAC
assigned to the entry (so its answer is the entry's script, as dnsmasq's is). Neither
has an IPv6 router advertisement responder: both pay iPXE's IPv6 wait alike. Boots
alternate between the servers; prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import payload, pxetwist_server
from lab.netns import LabNet
from lab.qemu import start_vm

NGINX_CONF = """daemon off; pid {folder}/nginx.pid; error_log stderr;
events {{}}
http {{ access_log off; sendfile on;
  server {{ listen 10.77.0.1:8081; root {folder}/www; }} }}
"""
SCRIPT = """#!ipxe
kernel http://10.77.0.1:8081/vmlinuz initrd=initrd.img console=ttyS0 panic=-1 pxelab_token=dnsmasq
initrd --name initrd.img http://10.77.0.1:8081/initrd.img
boot
"""


class DnsmasqLab:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.net = LabNet().up()
        www = folder / "www"
        payload.build(www)
        (www / "boot.ipxe").write_text(SCRIPT)
        (folder / "nginx.conf").write_text(NGINX_CONF.format(folder=folder))
        self.nginx = subprocess.Popen(self.net.exec_argv(
            "nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.dnsmasq = subprocess.Popen(self.net.exec_argv(
            "dnsmasq", "--no-daemon", "--port=0", f"--interface={self.net.bridge}",
            "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.150,12h", "--no-ping",
            "--conf-file=/dev/null", f"--dhcp-leasefile={folder}/leases", "--pid-file=",
            "--dhcp-userclass=set:ipxe,iPXE",
            "--dhcp-boot=tag:ipxe,http://10.77.0.1:8081/boot.ipxe",
            "--dhcp-option-force=tag:ipxe,60,PXEClient"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        for process in (self.dnsmasq, self.nginx):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        self.net.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pxetwist-boot-bench-"))
    times: dict[tuple[str, str], list[float]] = {}
    dnsmasq = DnsmasqLab(root / "dnsmasq")
    net = LabNet().up()
    server = None
    try:
        folder = root / "pxetwist"
        config = pxetwist_server.write_config(folder, net, "full")
        payload.write_entry(folder / "catalog", "lab", "pxetwist")
        server = pxetwist_server.start(net, folder, config)
        counter = 0
        for _ in range(args.boots):
            for firmware in ("bios", "uefi"):
                for name in ("pxetwist", "dnsmasq"):
                    counter += 1
                    mac = f"52:54:00:b0:{counter // 256:02x}:{counter % 256:02x}"
                    if name == "pxetwist":
                        server.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": False})
                        vm = start_vm(net, folder, mac, firmware)
                    else:
                        vm = start_vm(dnsmasq.net, dnsmasq.folder, mac, firmware)
                    try:
                        seconds = vm.wait_marker(name, 180)
                    finally:
                        vm.stop()
                    times.setdefault((name, firmware), []).append(seconds or float("nan"))
                    print(f"{name} {firmware}: {seconds}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
        net.down()
        dnsmasq.stop()
    print("| firmware | server | boots (s, QEMU start to marker) | median |")
    print("|---|---|---|---|")
    for firmware in ("bios", "uefi"):
        for name in ("pxetwist", "dnsmasq"):
            values = times[(name, firmware)]
            good = [v for v in values if v == v]
            median = f"{statistics.median(good):.1f} s" if good else "failed"
            shown = ", ".join("failed" if v != v else f"{v:.1f}" for v in values)
            print(f"| {firmware} | {name} | {shown} | {median} |")
        ratio = (statistics.median(times[("pxetwist", firmware)])
                 / statistics.median(times[("dnsmasq", firmware)]))
        print(f"| {firmware} | ratio pxetwist/dnsmasq | | {ratio:.2f} |")


if __name__ == "__main__":
    main()

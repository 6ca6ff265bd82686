"""Seconds from QEMU start to the payload's marker: pxetwist against dnsmasq, same run.

    python bench/boot.py [--boots 3]       (as root)

Both servers run in lab namespaces of their own (10.77.0.1 on a bridge) and boot the same
payload. dnsmasq is tuned as LAB-NOTES says: option 60 PXEClient in offers to iPXE, no
ping, and iPXE is sent straight to a static script on nginx. pxetwist has the MAC
assigned to the entry (so its answer is the entry's script, as dnsmasq's is). Both labs
have the same IPv6 setting: an RA-only responder (dnsmasq ``--enable-ra``, ULA prefix
fd77:77::/64) in the lab's peer namespace, cabled into the bridge, so iPXE's IPv6
configuration ends at once instead of after ~13 s. Boots alternate between the servers;
every process started here is stopped by its PID and both labs' namespaces are removed
(also on failure). Prints a markdown table for bench/RESULTS.md.
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

from lab import payload, pxetwist_server
from lab.netns import LabNet, ip
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


RA_PREFIX = "fd77:77::"


def start_ra(net: LabNet, folder: Path) -> subprocess.Popen[bytes]:
    """An IPv6 router-advertisement-only responder in ``net``'s peer namespace."""
    ip("-n", net.peer, "addr", "add", f"{RA_PREFIX}2/64", "dev", "pxlv1", "nodad")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(net.exec_argv(
        "dnsmasq", "--no-daemon", "--port=0", "--interface=pxlv1", "--bind-interfaces",
        "--conf-file=/dev/null", "--pid-file=", f"--dhcp-leasefile={folder}/ra.leases",
        "--enable-ra", f"--dhcp-range={RA_PREFIX},ra-only,64", "--log-facility=-",
        peer=True), stdout=(folder / "ra.log").open("ab"), stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop one process we started (by its PID) and reap it."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class DnsmasqLab:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.nginx: subprocess.Popen[bytes] | None = None
        self.dnsmasq: subprocess.Popen[bytes] | None = None
        self.ra: subprocess.Popen[bytes] | None = None
        self.net = LabNet().up(with_peer=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        folder = self.folder
        self.ra = start_ra(self.net, folder)
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
        for process in (self.dnsmasq, self.nginx, self.ra):
            stop(process)
        self.net.down()


def median_or_nan(values: list[float]) -> float:
    good = [v for v in values if v == v]
    return statistics.median(good) if good else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (logs, serial output) even on success")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pxetwist-boot-bench-"))
    root.chmod(0o755)  # nginx's workers run as www-data: they must reach www/
    times: dict[tuple[str, str], list[float]] = {}
    dnsmasq = DnsmasqLab(root / "dnsmasq")
    net = LabNet()
    server = None
    ra = None
    try:
        net.up(with_peer=True)
        folder = root / "pxetwist"
        ra = start_ra(net, folder)
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
                        seconds = vm.wait_marker(name, 120)
                    finally:
                        vm.stop()
                    times.setdefault((name, firmware), []).append(seconds or float("nan"))
                    print(f"{name} {firmware}: {seconds}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
        stop(ra)
        net.down()
        dnsmasq.stop()
    failed = any(v != v for values in times.values() for v in values)
    if args.keep or failed:
        print(f"logs kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.boots} boots per firmware and server, alternating; TCG; RA responder in both"
          " labs")
    print()
    print("| firmware | server | boots (s, QEMU start to marker) | median |")
    print("|---|---|---|---|")
    for firmware in ("bios", "uefi"):
        for name in ("pxetwist", "dnsmasq"):
            values = times[(name, firmware)]
            middle = median_or_nan(values)
            median = f"{middle:.1f} s" if middle == middle else "failed"
            shown = ", ".join("failed" if v != v else f"{v:.1f}" for v in values)
            print(f"| {firmware} | {name} | {shown} | {median} |")
        ratio = (median_or_nan(times[("pxetwist", firmware)])
                 / median_or_nan(times[("dnsmasq", firmware)]))
        print(f"| {firmware} | ratio pxetwist/dnsmasq | | {ratio:.2f} |")


if __name__ == "__main__":
    main()

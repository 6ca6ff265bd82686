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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import payload, pxetwist_server
from lab.netns import LabNet
from lab.qemu import VM, start_vm
from lab.ra import start_ra, stop

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


def wait_marker(vm: VM, token: str, timeout: float) -> float | None:
    """Seconds from QEMU start to the payload's marker in the serial log, polled every
    20 ms (lab/qemu.py's 0.2 s step is too coarse to compare servers); ``None`` if the
    VM stops or ``timeout`` passes without it."""
    marker = f"{payload.MARKER} {token}".encode()
    deadline = vm.started + timeout
    while time.monotonic() < deadline:
        if vm.serial.exists() and marker in vm.serial.read_bytes():
            return time.monotonic() - vm.started
        if vm.process.poll() is not None:
            found = vm.serial.exists() and marker in vm.serial.read_bytes()
            return time.monotonic() - vm.started if found else None
        time.sleep(0.02)
    return None


def median_or_nan(values: list[float]) -> float:
    good = [v for v in values if v == v]
    return statistics.median(good) if good else float("nan")


SNIFFER = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
out = open(sys.argv[2], "a", buffering=1)
seen = set()
while True:
    frame = s.recv(65535)
    now = time.time()
    kind = struct.unpack("!H", frame[12:14])[0]
    what = ""
    if kind == 0x0800 and frame[23] == 17:
        ihl = (frame[14] & 15) * 4
        sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
        dhcp = frame[14 + ihl + 8:]
        if 67 in (sport, dport) or 4011 in (sport, dport):
            options, i, mtype = dhcp[240:], 0, 0
            while i < len(options) and options[i] != 255:
                if options[i] == 0:
                    i += 1
                    continue
                if options[i] == 53:
                    mtype = options[i + 2]
                i += 2 + options[i + 1]
            what = f"dhcp {sport}->{dport} type {mtype} xid {dhcp[4:8].hex()}"
        elif 69 in (sport, dport):
            what = f"tftp {sport}->{dport}"
    elif kind == 0x0800 and frame[23] == 6:
        ihl = (frame[14] & 15) * 4
        sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
        flags = frame[14 + ihl + 13]
        if flags & 2 and not flags & 16:
            what = f"tcp syn ->{dport}"
        else:
            payload = frame[14 + ihl + (frame[14 + ihl + 12] >> 4) * 4:]
            if payload[:4] in (b"GET ", b"HTTP"):
                what = "http " + payload.split(b"\r\n", 1)[0].decode("latin-1")[:90]
    elif kind == 0x86DD and frame[20] == 58:
        what = {133: "icmp6 router solicit", 134: "icmp6 router advert",
                135: "icmp6 neighbour solicit", 136: "icmp6 neighbour advert"
                }.get(frame[54], "")
    elif kind == 0x0806:
        what = "arp"
    if what:
        out.write(f"{now:.3f} {frame[6:12].hex(':')} {what}\n")
"""


def start_sniffer(net: LabNet, out: Path) -> subprocess.Popen[bytes]:
    """A packet log of ``net``'s bridge (DHCP, TFTP, HTTP, ICMPv6, ARP) with wall times."""
    return subprocess.Popen(net.exec_argv(sys.executable, "-c", SNIFFER, net.bridge, str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trace_rows(trace: Path) -> list[tuple[str, str, list[float | None]]]:
    """Per boot in ``trace``: (mac, firmware, seconds from QEMU start to the first DHCP
    DISCOVER, the DHCP ACK, the first HTTP GET and the last GET (the initrd))."""
    rows: list[tuple[str, str, list[float | None]]] = []
    boots: dict[str, tuple[float, str, list[float | None]]] = {}
    for line in trace.read_text().splitlines():
        stamp, mac, what = line.split(" ", 2)
        if what.startswith("QEMU start"):
            boots[mac] = (float(stamp), what.split()[-1], [None, None, None, None])
            continue
        time_, firmware, marks = boots.get(mac, (0.0, "", []))
        seconds = float(stamp) - time_
        if mac not in boots:
            if "type 5" in what:  # the server's ACK: find the booting MAC it answers
                for booted, (_, _, booted_marks) in boots.items():
                    if booted_marks[0] is not None and booted_marks[1] is None:
                        booted_marks[1] = float(stamp) - boots[booted][0]
            continue
        if "type 1" in what and marks[0] is None:
            marks[0] = seconds
        elif what.startswith("http GET"):
            if marks[2] is None:
                marks[2] = seconds
            marks[3] = seconds
    for mac, (_, firmware, marks) in boots.items():
        rows.append((mac, firmware, marks))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--trace", action="store_true",
                        help="log each lab's packets (and QEMU start times) to trace.log in"
                             " its folder; keeps the temp folder")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp folder (logs, serial output) even on success")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pxetwist-boot-bench-"))
    root.chmod(0o755)  # nginx's workers run as www-data: they must reach www/
    times: dict[tuple[str, str], list[float]] = {}
    marker_at: dict[str, float | None] = {}
    dnsmasq = DnsmasqLab(root / "dnsmasq")
    net = LabNet()
    server = None
    ra = None
    sniffers: list[subprocess.Popen[bytes]] = []
    try:
        net.up(with_peer=True)
        folder = root / "pxetwist"
        ra = start_ra(net, folder)
        if args.trace:
            sniffers += [start_sniffer(net, folder / "trace.log"),
                         start_sniffer(dnsmasq.net, dnsmasq.folder / "trace.log")]
        config = pxetwist_server.write_config(folder, net, "full")
        payload.write_entry(folder / "catalog", "lab", "pxetwist")
        server = pxetwist_server.start(net, folder, config)
        counter = 0
        for _ in range(args.boots):
            for firmware in ("bios", "uefi"):
                for name in ("pxetwist", "dnsmasq"):
                    counter += 1
                    mac = f"52:54:00:b0:{counter // 256:02x}:{counter % 256:02x}"
                    lab_folder = folder if name == "pxetwist" else dnsmasq.folder
                    if name == "pxetwist":
                        server.api("PUT", f"/machines/{mac}", {"entry": "lab", "once": False})
                    if args.trace:
                        with (lab_folder / "trace.log").open("a") as trace:
                            trace.write(f"{time.time():.3f} {mac} QEMU start {firmware}\n")
                    vm = start_vm(net if name == "pxetwist" else dnsmasq.net, lab_folder, mac,
                                  firmware)
                    try:
                        seconds = wait_marker(vm, name, 120)
                    finally:
                        vm.stop()
                    times.setdefault((name, firmware), []).append(seconds or float("nan"))
                    marker_at[mac] = seconds
                    print(f"{name} {firmware}: {seconds}", file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
        stop(ra)
        for sniffer in sniffers:
            stop(sniffer)
        net.down()
        dnsmasq.stop()
    failed = any(v != v for values in times.values() for v in values)
    if args.keep or args.trace or failed:
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
    if args.trace:
        print()
        print("Packet trace on each lab bridge, seconds from QEMU start; the last column is"
              " the boot after the firmware's first DHCP packet, which leaves out the"
              " firmware's own start-up (no server is involved before it):")
        print()
        print("| server | firmware | MAC | DHCPDISCOVER | DHCPACK | first GET | last GET "
              "| marker | DISCOVER to marker |")
        print("|---|---|---|---|---|---|---|---|---|")
        after: dict[tuple[str, str], list[float]] = {}
        for name, lab in (("pxetwist", root / "pxetwist"), ("dnsmasq", root / "dnsmasq")):
            for mac, firmware, marks in trace_rows(lab / "trace.log"):
                marker = marker_at.get(mac)
                shown = ["-" if m is None else f"{m:.3f}" for m in [*marks, marker]]
                span = float("nan") if marks[0] is None or marker is None else marker - marks[0]
                after.setdefault((name, firmware), []).append(span)
                print(f"| {name} | {firmware} | {mac} | {' | '.join(shown)} | {span:.3f} |")
        for firmware in ("bios", "uefi"):
            ratio = (median_or_nan(after.get(("pxetwist", firmware), []))
                     / median_or_nan(after.get(("dnsmasq", firmware), [])))
            print(f"| median ratio pxetwist/dnsmasq | {firmware} | | | | | | | {ratio:.2f} |")


if __name__ == "__main__":
    main()

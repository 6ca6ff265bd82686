"""The boot payload: Debian's kernel and a ~1 MB busybox initrd whose /init prints
``PXELAB-CMDLINE <the kernel command line>`` and ``PXELAB-MARKER <token>`` (the token
comes from the kernel command line) on ttyS0 and powers off. A boot passed when the marker
shows in the serial log."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MARKER = "PXELAB-MARKER"
CACHE = Path(tempfile.gettempdir()) / "pxetwist-lab-payload"

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
TOKEN=$(/bin/busybox sed -n 's/.*pxelab_token=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
echo "CMDLINE_TEXT $(/bin/busybox cat /proc/cmdline)" > /dev/ttyS0
echo "MARKER_TEXT $TOKEN" > /dev/ttyS0
/bin/busybox sleep 1
/bin/busybox poweroff -f
""".replace("MARKER_TEXT", MARKER).replace("CMDLINE_TEXT", "PXELAB-CMDLINE")


def kernel_path() -> Path:
    """Debian's installed kernel (linux-image-amd64)."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise FileNotFoundError("no /boot/vmlinuz-* (install linux-image-amd64)")
    return Path(kernels[-1])


#: Debian's signed installer kernel (debian-installer-12-netboot-amd64).
DI_KERNEL = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")


def secure_boot_kernel_path() -> Path:
    """A signed kernel that boots through shim and GRUB with Secure Boot on.

    Seen here (docs/SECURE-BOOT.md): Debian's 6.1.0-57 kernel stops in its EFI stub under
    Secure Boot when GRUB 2.06 hands over ("XZ-compressed data is corrupt"), while it boots
    with Secure Boot off, and the installer's 6.1.0-50 kernel boots either way."""
    if not DI_KERNEL.is_file():
        raise FileNotFoundError(f"{DI_KERNEL} missing (install "
                                "debian-installer-12-netboot-amd64)")
    return DI_KERNEL


def busybox_path() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return Path(candidate)
    raise FileNotFoundError("no busybox (install busybox-static)")


#: A cloud-init NoCloud look-alike: bring the NIC up (virtio_net is a module in Debian's
#: kernel), read ``ds=nocloud;s=URL`` from the kernel line, fetch ``URL`` + ``meta-data`` and
#: ``user-data`` with wget and print them, then POST to the ``phone_home`` URL of the
#: user-data (as cloud-init's phone_home module does), and print the marker.
CLOUD_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /dev /sys /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
out() { echo "$@" > /dev/ttyS0; }
for module in MODULES; do insmod /lib/modules/$module.ko; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -T 2 -s /udhcpc.sh > /dev/null 2>&1 || out "PXELAB-NET failed"
TOKEN=$(sed -n 's/.*pxelab_token=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
SEED=$(sed -n 's/.*ds=nocloud;s=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
out "PXELAB-SEED $SEED"
wget -q -O /meta-data "${SEED}meta-data" && out "PXELAB-META $(cat /meta-data)"
wget -q -O /user-data "${SEED}user-data" || out "PXELAB-USERDATA failed"
while read -r line; do out "PXELAB-USERDATA $line"; done < /user-data
PHONE=$(sed -n '/^phone_home:/,/^[^ ]/s/^ *url: *//p' /user-data)
FORM="instance_id=$(hostname)&hostname=$(hostname)&token=x"
wget -q -O /answer --post-data "$FORM" "$PHONE" && out "PXELAB-PHONED-HOME $(cat /answer)"
out "MARKER_TEXT $TOKEN"
sleep 1
poweroff -f
""".replace("MARKER_TEXT", MARKER)

UDHCPC_SCRIPT = """#!/bin/busybox sh
case "$1" in
bound|renew) ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
             [ -n "$router" ] && ip route add default via "${router%% *}" ;;
esac
exit 0
"""

#: virtio_net and what it needs, in load order (all modules in Debian's kernel).
VIRTIO_NET = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
              "virtio_pci", "failover", "net_failover", "virtio_net")


def modules_folder() -> Path:
    """The modules of :func:`kernel_path`'s kernel."""
    version = kernel_path().name.removeprefix("vmlinuz-")
    return Path("/lib/modules") / version


def build(folder: Path, init: str = INIT, modules: tuple[str, ...] = (),
          kernel: Path | None = None, busybox: Path | None = None,
          console: str = "ttyS0") -> tuple[Path, Path]:
    """``vmlinuz`` and ``initrd.img`` in ``folder`` (built once, then copied from a cache
    keyed by the kernel and busybox files); ``modules`` (names of the kernel's modules) go
    into the initrd's ``/lib/modules``; another architecture's ``kernel`` and ``busybox``
    and its serial ``console`` (arm64: ``ttyAMA0``) may be given."""
    kernel = kernel or kernel_path()
    busybox = busybox or busybox_path()
    init = init.replace("/dev/ttyS0", f"/dev/{console}")
    key = hashlib.sha256(f"{kernel}:{kernel.stat().st_mtime}:{busybox}:"
                         f"{busybox.stat().st_mtime}:{init}:{modules}".encode()).hexdigest()[:16]
    cached = CACHE / key
    if not (cached / "initrd.img").exists():
        cached.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "bin").mkdir()
            (root / "dev").mkdir()
            (root / "proc").mkdir()
            shutil.copy(busybox, root / "bin" / "busybox")
            (root / "init").write_text(init.replace("MODULES", " ".join(modules)))
            if modules:
                (root / "lib" / "modules").mkdir(parents=True)
                for name in modules:
                    [found] = modules_folder().glob(f"kernel/**/{name}.ko")
                    shutil.copy(found, root / "lib" / "modules" / f"{name}.ko")
                (root / "udhcpc.sh").write_text(UDHCPC_SCRIPT)
                (root / "udhcpc.sh").chmod(0o755)
            (root / "init").chmod(0o755)
            os.mknod(root / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
            names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True
                                   ).stdout
            archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                                     input=names, capture_output=True, check=True).stdout
            partial = cached / "initrd.img.part"
            subprocess.run(["gzip", "-9"], input=archive, stdout=partial.open("wb"),
                           check=True)
            partial.rename(cached / "initrd.img")
        shutil.copy(kernel, cached / "vmlinuz")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(cached / "vmlinuz", folder / "vmlinuz")
    shutil.copy(cached / "initrd.img", folder / "initrd.img")
    return folder / "vmlinuz", folder / "initrd.img"


def write_entry(catalog: Path, name: str, token: str, label: str = "Lab payload",
                extra_args: str = "", kernel: Path | None = None) -> Path:
    """A linux catalog entry booting the payload with ``pxelab_token=token`` (and
    ``extra_args`` after it, as an operator would write them in entry.ini); ``kernel``
    replaces Debian's installed kernel."""
    folder = catalog / name
    build(folder)
    if kernel is not None:
        shutil.copy(kernel, folder / "vmlinuz")
    (folder / "entry.ini").write_text(
        f"[entry]\nname = {label}\nkind = linux\nkernel = vmlinuz\ninitrd = initrd.img\n"
        f"cmdline = console=ttyS0 panic=-1 pxelab_token={token} {extra_args}\n")
    return folder


#: The cloud-init-style entry's user-data and meta-data templates.
USER_DATA = """#cloud-config
hostname: {{ hostname }}
fqdn: {{ hostname }}.{{ vars.domain }}
phone_home:
  url: {{ installed_url }}
  post: [instance_id, hostname]
"""
META_DATA = "instance-id: {{ mac_hyphen }}\n"


def write_cloud_entry(catalog: Path, name: str, token: str) -> Path:
    """A linux entry booting the cloud-init look-alike (:data:`CLOUD_INIT`), with
    ``templates/user-data`` and ``meta-data`` and ``ds=nocloud;s={{ templates_url }}`` on
    its kernel line."""
    folder = catalog / name
    build(folder, CLOUD_INIT, VIRTIO_NET)
    (folder / "templates").mkdir(exist_ok=True)
    (folder / "templates" / "user-data").write_text(USER_DATA)
    (folder / "templates" / "meta-data").write_text(META_DATA)
    (folder / "entry.ini").write_text(
        "[entry]\nname = Cloud-init look-alike\nkind = linux\nkernel = vmlinuz\n"
        "initrd = initrd.img\n"
        f"cmdline = console=ttyS0 panic=-1 pxelab_token={token} "
        "ds=nocloud;s={{ templates_url }}\n"
        "[vars]\ndomain = lab.example\n")
    return folder

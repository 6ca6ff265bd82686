"""A catalog entry of the real Debian installer (``debian-installer-12-netboot-amd64``)
with a templated kernel line and preseed: the installer fetches its per-machine preseed,
whose ``preseed/early_command`` calls the machine's ``installed_url`` with the installer's
busybox ``wget`` and writes ``PXELAB-DI <hostname>`` to the console."""

from __future__ import annotations

import shutil
from pathlib import Path

NETBOOT = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
MARKER = "PXELAB-DI"

ENTRY_INI = """[entry]
name = Debian 12 installer (unattended)
kind = linux
kernel = linux
initrd = initrd.gz
cmdline = auto=true priority=critical url={{ templates_url }}preseed.cfg
    console=ttyS0,115200n8 interface=auto netcfg/get_nameservers={{ vars.nameserver }}
    netcfg/no_default_route=true DEBIAN_FRONTEND=text
[vars]
marker = %s
nameserver = %s
"""

#: The README's example preseed, trimmed to what the proof needs (no mirror: the lab has
#: no internet; the installer stops at its mirror step after the callback).
PRESEED = """# Debian 12 preseed for {{ hostname }} ({{ mac }}), rendered by pxetwist
d-i preseed/early_command string wget -q -O /dev/null '{{ installed_url }}'; \\
    echo "{{ vars.marker }} {{ hostname }} called back" > /dev/console
d-i debian-installer/locale string en_US.UTF-8
d-i keyboard-configuration/xkb-keymap select us
d-i netcfg/choose_interface select auto
d-i netcfg/get_hostname string {{ hostname.split('.')[0] }}
d-i netcfg/get_domain string {{ vars.domain | default('lab') }}
d-i mirror/country string manual
d-i mirror/http/hostname string deb.debian.org
d-i mirror/http/directory string /debian
d-i mirror/http/proxy string
"""


def missing() -> str | None:
    """Why the installer cannot be booted here, or ``None``."""
    for name in ("linux", "initrd.gz"):
        if not (NETBOOT / name).is_file():
            return (f"{NETBOOT / name} is missing (install debian-installer-12-netboot-amd64)")
    return None


def write_entry(catalog: Path, nameserver: str, name: str = "debian-installer") -> Path:
    """The installer entry, with ``templates/preseed.cfg``. ``nameserver``: what d-i is
    told on its kernel line when DHCP names none (it would ask, even at critical)."""
    folder = catalog / name
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for file in ("linux", "initrd.gz"):
        shutil.copy(NETBOOT / file, folder / file)
    (folder / "templates" / "preseed.cfg").write_text(PRESEED)
    (folder / "entry.ini").write_text(ENTRY_INI % (MARKER, nameserver))
    return folder

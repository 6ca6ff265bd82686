"""The signed boot chain for Secure Boot machines: which files, where they are, and
whether a kernel is signed at all.

With ``[boot] efi_loader = shim`` a UEFI x64 client is sent ``shimx64.efi``
(arm64: ``shimaa64.efi``), Microsoft-signed. Debian's shim then loads
``grubx64.efi`` (``grubaa64.efi``) from the TFTP root, and that GRUB asks for
``grub/grub.cfg`` (:mod:`pxetwist.grub`). With ``shim_second_stage = ipxe`` the
client gets iPXE's own signed shim (``ipxe-shimx64.efi``), which loads a signed
``ipxe.efi`` that reads ``autoexec.ipxe``; Debian ships neither, so the operator
drops them into the TFTP root.

Debian's files are found in their package paths (``[boot] shim_dir``,
``grub_dir``) and served over TFTP (and ``/files/``) under the names shim expects,
so nothing needs copying.
"""

from __future__ import annotations

import struct
from pathlib import Path

from attrs import frozen

from pxetwist.config import BootConfig

SHIM, IPXE = "shim", "ipxe"
LOADERS: tuple[str, ...] = (IPXE, SHIM)


@frozen
class Family:
    r"""One CPU family's signed chain.

    :ivar codes: option-93 codes of this family's UEFI clients (PXE and HTTP Boot).
    :ivar shim: the TFTP name of the Microsoft-signed shim.
    :ivar grub: the name shim loads next (from the TFTP root).
    :ivar ipxe_shim: iPXE's own signed shim.
    :ivar shim_files: names of Debian's shim in ``shim_dir``, first found wins.
    :ivar grub_files: names of Debian's signed network GRUB in ``grub_dir``.
    :ivar removable: the firmware's default loader name on a disk (``\EFI\BOOT\...``).
    """

    name: str
    codes: tuple[int, ...]
    http_codes: tuple[int, ...]
    shim: str
    grub: str
    ipxe_shim: str
    shim_files: tuple[str, ...]
    grub_files: tuple[str, ...]
    removable: str


FAMILIES: tuple[Family, ...] = (
    Family("x64", (7, 9), (16, 17), "shimx64.efi", "grubx64.efi", "ipxe-shimx64.efi",
           ("shimx64.efi.signed", "shimx64.efi"),
           ("x86_64-efi-signed/grubnetx64.efi.signed", "grubnetx64.efi.signed",
            "grubx64.efi"), "BOOTX64.EFI"),
    Family("arm64", (11,), (19,), "shimaa64.efi", "grubaa64.efi", "ipxe-shimaa64.efi",
           ("shimaa64.efi.signed", "shimaa64.efi"),
           ("arm64-efi-signed/grubnetaa64.efi.signed", "grubnetaa64.efi.signed",
            "grubaa64.efi"), "BOOTAA64.EFI"),
)


def family_of(code: int | None) -> Family | None:
    """The signed-chain family of an option-93 code, or ``None`` (BIOS, ia32, ...)."""
    for family in FAMILIES:
        if code in family.codes or code in family.http_codes:
            return family
    return None


def loader_for(own: str | None, efi_loader: str) -> tuple[str, str]:
    """``(loader, why)``: a machine's own loader (``PUT /machines/{mac}`` ``loader``)
    wins over ``[boot] efi_loader``."""
    if own is not None:
        return own, f"the machine's loader {own}"
    return efi_loader, f"[boot] efi_loader {efi_loader}"


def first_stage(family: Family, second_stage: str) -> str:
    """The TFTP name a client of ``family`` is sent with the shim loader."""
    return family.ipxe_shim if second_stage == IPXE else family.shim


def http_boot_url(base_url: str, mac: str, second_stage: str, family: Family) -> str:
    """What a UEFI HTTP Boot client on the shim loader is sent: with GRUB, the FAT image
    of its boot plan (:mod:`pxetwist.fatimage`: OVMF boots a ``.img`` URL as a RAM disk);
    with iPXE's signed shim, that shim by URL (it reads ``autoexec.ipxe`` beside it)."""
    if second_stage == IPXE:
        return f"{base_url}/files/{family.ipxe_shim}"
    return f"{base_url}/pxe/secureboot/{mac}-{family.name}.img"


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        path = folder / name
        if path.is_file():
            return path
    return None


def signed_files(config: BootConfig) -> dict[str, Path]:
    """TFTP name -> Debian's file, for the shims and GRUBs found in ``shim_dir`` and
    ``grub_dir`` (with ``shim_second_stage = ipxe`` they come from the TFTP root)."""
    found: dict[str, Path] = {}
    for family in FAMILIES:
        shim = _first_file(config.shim_dir, family.shim_files)
        grub = _first_file(config.grub_dir, family.grub_files)
        if shim is not None:
            found[family.shim] = shim
        if grub is not None:
            found[family.grub] = grub
    return found


def missing_line(config: BootConfig, tftp_folders: tuple[Path, ...]) -> str | None:
    """One line saying which files of the chain are missing (for the start-up log), or
    ``None`` when every family's chain is complete or the shim loader is not used."""
    if config.efi_loader != SHIM:
        return None
    found = signed_files(config)
    missing = []
    for family in FAMILIES:
        if config.shim_second_stage == IPXE:
            names = (family.ipxe_shim, "ipxe.efi")
            lost = [n for n in names if not any((f / n).is_file() for f in tftp_folders)]
            missing += [f"{n} (in the TFTP root)" for n in lost]
        else:
            missing += [f"{family.shim} ({config.shim_dir}: {family.shim_files[0]})"
                        for _ in (1,) if family.shim not in found]
            missing += [f"{family.grub} ({config.grub_dir}: {family.grub_files[0]})"
                        for _ in (1,) if family.grub not in found]
    if not missing:
        return None
    return ("[boot] efi_loader = shim: missing " + ", ".join(missing)
            + "; those clients would ask for files that are not there")


#: PE optional-header magics and the offset of their data directories.
_PE32, _PE32_PLUS = 0x10B, 0x20B
_SECURITY_DIRECTORY = 4


def authenticode_signed(path: Path) -> bool | None:
    """Whether ``path`` is a PE image carrying a certificate table (an Authenticode
    signature: what shim and the firmware check), ``False`` if it is a PE without one,
    ``None`` if it is not a PE at all (or cannot be read). Reads only the headers."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if len(head) < 0x40 or head[:2] != b"MZ":
        return None
    pe = struct.unpack_from("<I", head, 0x3C)[0]
    optional = pe + 24
    if pe + 26 > len(head) or head[pe:pe + 4] != b"PE\0\0":
        return None
    magic = struct.unpack_from("<H", head, optional)[0]
    if magic == _PE32:
        directories, count_at = optional + 96, optional + 92
    elif magic == _PE32_PLUS:
        directories, count_at = optional + 112, optional + 108
    else:
        return None
    entry = directories + 8 * _SECURITY_DIRECTORY
    if entry + 8 > len(head):
        return None
    count = struct.unpack_from("<I", head, count_at)[0]
    if count <= _SECURITY_DIRECTORY:
        return False
    offset, size = struct.unpack_from("<II", head, entry)
    return offset != 0 and size > 8

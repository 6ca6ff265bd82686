"""Client system architectures (DHCP option 93, RFC 4578 and the IANA registry).

Config (``[boot.files]``), the boot policy and the explain endpoint all name
architectures, so the one table of codes and names lives here.
"""

from __future__ import annotations

from attrs import frozen


@frozen
class Arch:
    """One IANA "Processor Architecture Type".

    :ivar code: the option-93 code.
    :ivar name: our short name, usable as a ``[boot.files]`` key.
    :ivar description: the registry's wording.
    :ivar firmware: ``bios``, ``uefi`` or ``other`` (what kind of binary it runs).
    :ivar http: the client boots over HTTP (UEFI HTTP boot, option 60 ``HTTPClient``).
    :ivar base: for an HTTP-boot code, the name of the same machine's PXE code, whose
        boot file it also runs; ``""`` otherwise.
    """

    code: int
    name: str
    description: str
    firmware: str
    http: bool = False
    base: str = ""


_TABLE: tuple[Arch, ...] = (
    Arch(0, "bios", "x86 BIOS", "bios"),
    Arch(1, "pc98", "NEC/PC98", "other"),
    Arch(2, "itanium", "Itanium", "other"),
    Arch(3, "alpha", "DEC Alpha", "other"),
    Arch(4, "arc-x86", "Arc x86", "other"),
    Arch(5, "lean-client", "Intel Lean Client", "other"),
    Arch(6, "uefi-ia32", "x86 UEFI", "uefi"),
    Arch(7, "uefi-x64", "x64 UEFI", "uefi"),
    Arch(8, "uefi-xscale", "EFI Xscale", "uefi"),
    Arch(9, "uefi-bc", "EBC (x64 UEFI in practice)", "uefi", base="uefi-x64"),
    Arch(10, "uefi-arm32", "ARM 32-bit UEFI", "uefi"),
    Arch(11, "uefi-arm64", "ARM 64-bit UEFI", "uefi"),
    Arch(12, "ppc-openfirmware", "PowerPC Open Firmware", "other"),
    Arch(13, "ppc-epapr", "PowerPC ePAPR", "other"),
    Arch(14, "power-opal", "POWER OPAL v3", "other"),
    Arch(15, "uefi-ia32-http", "x86 UEFI boot from HTTP", "uefi", True, "uefi-ia32"),
    Arch(16, "uefi-x64-http", "x64 UEFI boot from HTTP", "uefi", True, "uefi-x64"),
    Arch(17, "uefi-bc-http", "EBC boot from HTTP", "uefi", True, "uefi-bc"),
    Arch(18, "uefi-arm32-http", "ARM 32-bit UEFI boot from HTTP", "uefi", True, "uefi-arm32"),
    Arch(19, "uefi-arm64-http", "ARM 64-bit UEFI boot from HTTP", "uefi", True, "uefi-arm64"),
    Arch(20, "bios-http", "PC/AT BIOS boot from HTTP", "bios", True, "bios"),
    Arch(21, "uboot-arm32", "ARM 32-bit U-Boot", "other"),
    Arch(22, "uboot-arm64", "ARM 64-bit U-Boot", "other"),
    Arch(23, "uboot-arm32-http", "ARM 32-bit U-Boot boot from HTTP", "other", True, "uboot-arm32"),
    Arch(24, "uboot-arm64-http", "ARM 64-bit U-Boot boot from HTTP", "other", True, "uboot-arm64"),
    Arch(25, "uefi-riscv32", "RISC-V 32-bit UEFI", "uefi"),
    Arch(26, "uefi-riscv32-http", "RISC-V 32-bit UEFI boot from HTTP", "uefi", True,
         "uefi-riscv32"),
    Arch(27, "uefi-riscv64", "RISC-V 64-bit UEFI", "uefi"),
    Arch(28, "uefi-riscv64-http", "RISC-V 64-bit UEFI boot from HTTP", "uefi", True,
         "uefi-riscv64"),
    Arch(29, "uefi-riscv128", "RISC-V 128-bit UEFI", "uefi"),
    Arch(30, "uefi-riscv128-http", "RISC-V 128-bit UEFI boot from HTTP", "uefi", True,
         "uefi-riscv128"),
    Arch(31, "s390-basic", "s390 Basic", "other"),
    Arch(32, "s390-extended", "s390 Extended", "other"),
    Arch(33, "uefi-mips32", "MIPS 32-bit UEFI", "uefi"),
    Arch(34, "uefi-mips64", "MIPS 64-bit UEFI", "uefi"),
    Arch(35, "uefi-sunway32", "Sunway 32-bit UEFI", "uefi"),
    Arch(36, "uefi-sunway64", "Sunway 64-bit UEFI", "uefi"),
    Arch(37, "uefi-loongarch32", "LoongArch 32-bit UEFI", "uefi"),
    Arch(38, "uefi-loongarch32-http", "LoongArch 32-bit UEFI boot from HTTP", "uefi", True,
         "uefi-loongarch32"),
    Arch(39, "uefi-loongarch64", "LoongArch 64-bit UEFI", "uefi"),
    Arch(40, "uefi-loongarch64-http", "LoongArch 64-bit UEFI boot from HTTP", "uefi", True,
         "uefi-loongarch64"),
    Arch(41, "arm-rpiboot", "ARM rpiboot", "other"),
)

BY_CODE: dict[int, Arch] = {a.code: a for a in _TABLE}
BY_NAME: dict[str, Arch] = {a.name: a for a in _TABLE}

#: The ``[boot.files]`` key used when no entry matches a client's architecture.
DEFAULT_KEY = "default"


def arch_for_code(code: int) -> Arch | None:
    """The registry entry for an option-93 code, or ``None`` for an unassigned one."""
    return BY_CODE.get(code)


def is_boot_files_key(key: str) -> bool:
    """Whether ``key`` may appear in ``[boot.files]``: a name, a code, or ``default``."""
    if key == DEFAULT_KEY or key in BY_NAME:
        return True
    return key.isdigit() and 0 <= int(key) <= 0xFFFF


#: Loader file suffixes and the firmware kind that runs them.
_LOADER_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".efi", "uefi"), (".kpxe", "bios"), (".kkpxe", "bios"), (".pxe", "bios"),
    (".0", "bios"), (".com", "bios"),
)


def firmware_of_code(code: int | None) -> str:
    """What kind of binary a client with option-93 ``code`` runs: ``bios``, ``uefi``,
    ``other``, or ``unknown`` for an unassigned code. No option 93 at all is a
    legacy x86 BIOS PXE ROM (RFC 4578 2.1)."""
    if code is None:
        return "bios"
    arch = BY_CODE.get(code)
    return arch.firmware if arch is not None else "unknown"


def firmware_of_file(name: str) -> str | None:
    """The firmware kind a loader file is built for, from its name (``ipxe.efi``:
    ``uefi``; ``undionly.kpxe``, ``pxelinux.0``: ``bios``), or ``None`` when the name
    does not say (a URL, a script)."""
    lowered = name.lower().split("?", 1)[0]
    for suffix, firmware in _LOADER_SUFFIXES:
        if lowered.endswith(suffix):
            return firmware
    return None

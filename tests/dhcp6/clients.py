"""DHCPv6 client messages as OVMF, iPXE and a plain client send them (LAB-NOTES)."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

from pxetwist.dhcp6 import packet as p6
from pxetwist.dhcp6.packet import IaAddress, IaNa, Message6

MAC = bytes.fromhex("525400123456")
#: OVMF's and iPXE's link-local EUI-64 address for :data:`MAC`.
LINK_LOCAL = "fe80::5054:ff:fe12:3456"
UUID_DUID = struct.pack("!H", 4) + bytes(range(16))
LL_DUID = p6.duid_ll(bytes.fromhex("52540000beef"))


def ia(iaid: int = 1, *addresses: str) -> tuple[int, bytes]:
    return p6.IA_NA, p6.encode_ia_na(IaNa(iaid, 0, 0, tuple(
        IaAddress(IPv6Address(a), 0, 0) for a in addresses)))


def ovmf(kind: int, *extra: tuple[int, bytes], arch: int = 7, xid: int = 0x1234,
         http: bool = False) -> Message6:
    """OVMF's PXEv6 (or HTTPv6 with ``http``): DUID-UUID, IA_NA, ORO, 61, 62, 16."""
    name = b"HTTPClient:Arch:00016:UNDI:003000" if http else b"PXEClient:Arch:00007:UNDI:003000"
    return Message6(kind, xid, (
        (p6.CLIENTID, UUID_DUID), (p6.ELAPSED_TIME, b"\0\0"),
        (p6.ORO, struct.pack("!4H", 59, 60, 23, 16)),
        (p6.CLIENT_ARCH, struct.pack("!H", 16 if http else arch)), (p6.NII, b"\x01\x03\x00"),
        p6.vendor_class(p6.ENTERPRISE_PXE, name), *extra))


def ipxe(kind: int, *extra: tuple[int, bytes], xid: int = 0x4321) -> Message6:
    """iPXE: DUID-UUID, ORO 23/24/59/60, option 61 = 0, user class ``iPXE``."""
    return Message6(kind, xid, (
        (p6.CLIENTID, UUID_DUID), (p6.ORO, struct.pack("!4H", 23, 24, 59, 60)),
        (p6.CLIENT_ARCH, b"\0\0"), (p6.USER_CLASS, p6.encode_opaque_list([b"iPXE"])),
        *extra))


def plain(kind: int, *extra: tuple[int, bytes], xid: int = 0x777) -> Message6:
    """A plain client (dhclient): DUID-LL, nothing about booting."""
    return Message6(kind, xid, ((p6.CLIENTID, LL_DUID), *extra))

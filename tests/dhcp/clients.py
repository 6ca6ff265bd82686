"""Client packets as QEMU's iPXE ROM and OVMF send them (LAB-NOTES), for fixtures."""

from __future__ import annotations

from ipaddress import IPv4Address

from pxetwist.dhcp import options as opt
from pxetwist.dhcp.packet import BOOTREQUEST, DhcpPacket, encode

MAC = "52:54:00:12:34:56"
UUID_RAW = bytes(range(16))
PARAMS = bytes([1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, *range(128, 136), 175, 203])


def chaddr(mac: str = MAC) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + b"\0" * 10


def ipxe_rom(kind: int, mac: str = MAC, arch: int = 0, xid: int = 0x1234, broadcast: bool = False,
             **fields: object) -> DhcpPacket:
    """What QEMU's iPXE ROM (1.0.0+git-20190125) sends: 77 raw 'iPXE', 175, 93, 94, 60."""
    extra = list(fields.pop("options", []))  # type: ignore[call-overload]
    options = [
        (opt.MESSAGE_TYPE, bytes([kind])),
        (opt.MAX_SIZE, (1472).to_bytes(2, "big")),
        (opt.CLIENT_ARCH, arch.to_bytes(2, "big")),
        (opt.CLIENT_NDI, b"\x01\x02\x01" if arch == 0 else b"\x01\x03\x0a"),
        (opt.VENDOR_CLASS, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()),
        (opt.USER_CLASS, b"iPXE"),
        (opt.PARAMETER_LIST, PARAMS),
        (opt.IPXE_ENCAP, b"\xb1\x05\x01\x10\xec\x81\x39\xeb\x03\x01\x00\x00\x17\x01\x01"),
        (opt.CLIENT_ID, b"\x01" + bytes.fromhex(mac.replace(":", ""))),
        (opt.CLIENT_UUID, b"\x00" + UUID_RAW),
        *extra,
    ]
    return DhcpPacket(op=BOOTREQUEST, xid=xid, chaddr=chaddr(mac),
                      flags=0x8000 if broadcast else 0, options=options, **fields)  # type: ignore[arg-type]


def ovmf(kind: int, mac: str = MAC, xid: int = 0x99, **fields: object) -> DhcpPacket:
    """OVMF's own PXE client: arch 7, UNDI 3.0, no 77/175, broadcast flag set."""
    extra = list(fields.pop("options", []))  # type: ignore[call-overload]
    options = [
        (opt.MESSAGE_TYPE, bytes([kind])),
        (opt.CLIENT_ARCH, (7).to_bytes(2, "big")),
        (opt.VENDOR_CLASS, b"PXEClient:Arch:00007:UNDI:003000"),
        (opt.PARAMETER_LIST, bytes([1, 3, 6, 60, 66, 67, 43, 97])),
        (opt.CLIENT_UUID, b"\x00" + UUID_RAW),
        *extra,
    ]
    return DhcpPacket(op=BOOTREQUEST, xid=xid, chaddr=chaddr(mac), flags=0x8000,
                      options=options, **fields)  # type: ignore[arg-type]


def plain(kind: int, mac: str = "52:54:00:aa:bb:cc", **fields: object) -> DhcpPacket:
    """An ordinary (non-PXE) DHCP client such as dhclient."""
    extra = list(fields.pop("options", []))  # type: ignore[call-overload]
    options = [(opt.MESSAGE_TYPE, bytes([kind])), (opt.PARAMETER_LIST, bytes([1, 3, 6, 15])),
               *extra]
    return DhcpPacket(op=BOOTREQUEST, xid=7, chaddr=chaddr(mac), options=options,
                      **fields)  # type: ignore[arg-type]


def requested(ip: str) -> tuple[int, bytes]:
    return (opt.REQUESTED_IP, IPv4Address(ip).packed)


def server_id(ip: str) -> tuple[int, bytes]:
    return (opt.SERVER_ID, IPv4Address(ip).packed)


def wire(packet: DhcpPacket) -> bytes:
    return encode(packet)

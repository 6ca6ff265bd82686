"""The signed chain (issue 14): which loader a UEFI client gets, where Debian's shim and
GRUB are found, the files TFTP makes for GRUB and signed iPXE, the per-machine loader,
and explain's Secure Boot readiness."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from pxetwist import fatimage, signed
from pxetwist.chain import chain_files, image_parts
from pxetwist.config import load_text
from pxetwist.events import EventBus
from pxetwist.machines import MachineRegistry
from pxetwist.policy import BootPolicy, ClientFacts
from pxetwist.store import Store
from pxetwist.tftp.files import FileRefusedError, FileResolver
from tests.http.helpers import MAC, make_rig

BASE = "http://10.77.0.1:8080"


def fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A shim_dir and grub_dir laid out as Debian's packages lay them out."""
    shim, grub = tmp_path / "shim", tmp_path / "grub"
    (grub / "x86_64-efi-signed").mkdir(parents=True, exist_ok=True)
    shim.mkdir(exist_ok=True)
    (shim / "shimx64.efi.signed").write_bytes(b"MZshim")
    (grub / "x86_64-efi-signed" / "grubnetx64.efi.signed").write_bytes(b"MZgrub")
    (shim / "shimaa64.efi").write_bytes(b"MZshimaa")
    return shim, grub


def config_text(tmp_path: Path, boot: str = "") -> str:
    shim, grub = fake_tree(tmp_path)
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(exist_ok=True)
    return (f"[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\nrescan_interval = 0\n"
            f"[boot]\nshim_dir = {shim}\ngrub_dir = {grub}\n{boot}")


def test_shim_loader_sends_each_uefi_family_its_shim(tmp_path: Path) -> None:
    """With efi_loader = shim, x64 UEFI clients get shimx64.efi, arm64 shimaa64.efi, HTTP Boot
    an image URL."""
    config = load_text(config_text(tmp_path, "efi_loader = shim\n"), tmp_path)
    own: dict[str, str] = {"52:54:00:00:00:09": "ipxe"}
    policy = BootPolicy(config.boot, BASE, "10.77.0.1", own.get)
    for code, name in ((7, "shimx64.efi"), (9, "shimx64.efi"), (11, "shimaa64.efi")):
        decision = policy.decide(ClientFacts("52:54:00:00:00:01", code, "PXEClient"))
        assert (decision.how, decision.filename) == ("tftp", name)
        assert "[boot] efi_loader shim" in decision.reason
    assert policy.decide(ClientFacts("m", 0, "PXEClient")).filename == "undionly.kpxe"
    # the machine's own loader wins; iPXE itself still gets its script
    assert policy.decide(ClientFacts("52:54:00:00:00:09", 7, "PXEClient")).filename == "ipxe.efi"
    assert policy.decide(ClientFacts("m", 7, "PXEClient", is_ipxe=True)).filename.endswith(
        "/pxe/boot.ipxe")
    second = load_text(config_text(tmp_path, "efi_loader = shim\nshim_second_stage = ipxe\n"),
                       tmp_path)
    assert BootPolicy(second.boot, BASE, "a").decide(
        ClientFacts("m", 7, "PXEClient")).filename == "ipxe-shimx64.efi"
    default = load_text(config_text(tmp_path), tmp_path)
    assert BootPolicy(default.boot, BASE, "a").decide(
        ClientFacts("m", 7, "PXEClient")).filename == "ipxe.efi"
    assert BootPolicy(default.boot, BASE, "a", lambda mac: "shim").decide(
        ClientFacts("m", 7, "PXEClient")).filename == "shimx64.efi"


def test_signed_files_and_the_missing_line(tmp_path: Path) -> None:
    """The signed files are found in Debian's package paths, and one start-up line names what is
    missing."""
    config = load_text(config_text(tmp_path, "efi_loader = shim\n"), tmp_path)
    found = signed.signed_files(config.boot)
    assert sorted(found) == ["grubx64.efi", "shimaa64.efi", "shimx64.efi"]
    line = signed.missing_line(config.boot, (config.tftp.root,))
    assert line is not None and "grubaa64.efi" in line and "shimx64" not in line
    ipxe_chain = load_text(config_text(tmp_path, "efi_loader = shim\nshim_second_stage = ipxe"),
                           tmp_path)
    line = signed.missing_line(ipxe_chain.boot, (ipxe_chain.tftp.root,))
    assert line is not None and "ipxe-shimx64.efi (in the TFTP root)" in line
    off = load_text(config_text(tmp_path), tmp_path)
    assert signed.missing_line(off.boot, ()) is None


def pe(path: Path, certificate: bool, plus: bool = True) -> Path:
    """A minimal PE header, with or without a certificate table."""
    head = bytearray(1024)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    head[0x80:0x84] = b"PE\0\0"
    optional = 0x80 + 24
    struct.pack_into("<H", head, optional, 0x20B if plus else 0x10B)
    count_at, directories = (optional + 108, optional + 112) if plus else (optional + 92,
                                                                           optional + 96)
    struct.pack_into("<I", head, count_at, 16)
    if certificate:
        struct.pack_into("<II", head, directories + 32, 0x4000, 0x800)
    path.write_bytes(bytes(head))
    return path


def test_authenticode_check(tmp_path: Path) -> None:
    """A PE with a certificate table is signed, one without is not, a non-PE or missing file is
    unknown."""
    assert signed.authenticode_signed(pe(tmp_path / "a", True)) is True
    assert signed.authenticode_signed(pe(tmp_path / "b", True, plus=False)) is True
    assert signed.authenticode_signed(pe(tmp_path / "c", False)) is False
    (tmp_path / "d").write_bytes(b"not a PE at all")
    assert signed.authenticode_signed(tmp_path / "d") is None
    assert signed.authenticode_signed(tmp_path / "missing") is None


@pytest.fixture
def resolver(tmp_path: Path) -> FileResolver:
    text = config_text(tmp_path, "efi_loader = shim\nunknown = menu\nmenu_timeout = 4\n")
    config = load_text(text, tmp_path)
    lab = tmp_path / "catalog" / "lab"
    lab.mkdir()
    (lab / "entry.ini").write_text("[entry]\nkind = linux\nkernel = vmlinuz\n"
                                   "initrd = initrd.img\ncmdline = console=ttyS0 x=${mac}\n")
    (lab / "vmlinuz").write_bytes(b"kernel")
    (lab / "initrd.img").write_bytes(b"initrd")
    (lab / "secret").write_bytes(b"not named by entry.ini")
    from pxetwist.catalog import CatalogService

    store = Store(tmp_path / "s.sqlite")
    catalog = CatalogService(config.catalog, store, MemoryReactorClock())
    catalog.load()
    machines = MachineRegistry(store, EventBus(MemoryReactorClock()), MemoryReactorClock())
    generated, linked = chain_files(config, catalog, machines, BASE)
    return FileResolver((config.tftp.root,), generated, linked=linked)


def read(resolver: FileResolver, name: str) -> bytes:
    source = resolver.open(name)
    try:
        return bytes(source.read(0, source.size or 0))
    finally:
        source.close()


def test_tftp_serves_the_chain_and_per_machine_grub_configs(resolver: FileResolver) -> None:
    """TFTP serves shim, GRUB, per-MAC GRUB configs and entry files, and refuses anything else
    under those names."""
    assert read(resolver, "shimx64.efi") == b"MZshim"
    assert read(resolver, "/grubx64.efi") == b"MZgrub"
    assert b"configfile /grub/pxetwist/${net_default_mac}.cfg" in read(resolver,
                                                                       "/grub/grub.cfg")
    menu = read(resolver, "/grub/pxetwist/52:54:00:aa:bb:cc.cfg").decode()
    assert "set timeout=4" in menu and "menuentry 'lab'" in menu
    assert "'x=52:54:00:aa:bb:cc'" in menu
    assert "linux '/pxetwist/entries/lab/vmlinuz'" in menu
    assert read(resolver, "pxetwist/entries/lab/vmlinuz") == b"kernel"
    assert read(resolver, "pxetwist/entries/lab/initrd.img") == b"initrd"
    autoexec = read(resolver, "autoexec.ipxe").decode()
    assert autoexec == read(resolver, "boot.ipxe").decode()
    assert f"chain --autofree {BASE}/pxe/boot.ipxe?mac=${{mac:hexhyp}}" in autoexec
    for name in ("pxetwist/entries/lab/secret", "pxetwist/entries/lab/entry.ini",
                 "pxetwist/entries/nope/vmlinuz", "pxetwist/entries/lab/../lab/vmlinuz",
                 "grub/pxetwist/not-a-mac.cfg", "grubaa64.efi"):
        with pytest.raises(FileRefusedError):
            resolver.open(name)


def test_put_loader_and_explain(tmp_path: Path) -> None:
    """PUT sets a machine's loader (a bad one is 400) and explain tells its Secure Boot
    readiness."""
    rig = make_rig(tmp_path, "[dhcp]\nmode = proxy\n[boot]\nefi_loader = shim\n")
    code, body, _ = rig.put(f"/machines/{MAC}", {"loader": "bogus"})
    assert code == 400
    code, body, _ = rig.put(f"/machines/{MAC}", {"loader": "ipxe"})
    assert code == 200 and json.loads(body)["loader"] == "ipxe"
    _, body, _ = rig.get(f"/machines/{MAC}/explain")
    secure = json.loads(body)["secure_boot"]
    assert secure["loader"] == "ipxe" and "the machine's loader" in secure["loader_reason"]
    assert any("cannot boot where Secure Boot is on" in note for note in secure["notes"])
    code, body, _ = rig.put(f"/machines/{MAC}", {"entry": "lab", "loader": None})
    assert code == 200 and json.loads(body)["loader"] is None
    _, body, _ = rig.get(f"/machines/{MAC}/explain")
    explained = json.loads(body)
    secure = explained["secure_boot"]
    assert secure["loader"] == "shim"
    assert secure["kernel_signed"] is None  # the test kernel is no PE
    assert any("will be refused under Secure Boot" in note for note in secure["notes"])
    assert any("next-server" in note for note in secure["notes"])  # proxy mode
    assert "linux '/pxetwist/entries/lab/vmlinuz'" in explained["grub"]
    _, body, _ = rig.put(f"/machines/{MAC}", {"entry": "rescue-iso"})
    secure = json.loads(rig.get(f"/machines/{MAC}/explain")[1])["secure_boot"]
    assert "needs iPXE" in secure["grub_refuses"]


@pytest.mark.skipif(fatimage.mtools_missing() is not None,
                    reason=str(fatimage.mtools_missing()))
def test_secure_boot_image_route(tmp_path: Path) -> None:
    """UEFI HTTP Boot under shim: DHCP names /pxe/secureboot/<MAC>-x64.img; the image holds
    shim as BOOTX64.EFI, GRUB, the plan's grub.cfg and the entry's files; it is cached by
    content; a machine with nothing to boot gets a 404 with the reason."""
    shim, grub_dir = fake_tree(tmp_path)
    rig = make_rig(tmp_path, f"[boot]\nefi_loader = shim\nshim_dir = {shim}\n"
                             f"grub_dir = {grub_dir}\n")
    policy = BootPolicy(rig.app.config.boot, BASE, "10.77.0.1")
    decision = policy.decide(ClientFacts(MAC, 16, "HTTPClient:Arch:00016:UNDI:003000"))
    assert (decision.how, decision.vendor_class) == ("http", "HTTPClient")
    assert decision.filename == f"{BASE}/pxe/secureboot/{MAC}-x64.img"
    assert rig.get(f"/pxe/secureboot/{MAC}-x64.img")[0] == 404  # unassigned: local boot
    rig.put(f"/machines/{MAC}", {"entry": "lab"})
    # (StubTreq cannot carry a body of megabytes: HEAD here, the bytes from the builder)
    code, _, response = rig._do("HEAD", f"/pxe/secureboot/{MAC}-x64.img")
    assert code == 200
    plan = rig.app._plan(MAC, None)
    parts = image_parts(rig.app.config, rig.catalog, plan, MAC, signed.FAMILIES[0])
    assert not isinstance(parts, str)
    image = fatimage.build_image(tmp_path / "direct", *parts)

    def inside(name: str) -> bytes:
        out = subprocess.run(["mtype", "-i", str(image), f"::/{name}"], capture_output=True,
                             check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        return out.stdout

    assert inside("EFI/BOOT/BOOTX64.EFI") == b"MZshim"
    assert inside("EFI/BOOT/grubx64.efi") == b"MZgrub"
    assert b"linux '/pxetwist/entries/lab/vmlinuz'" in inside("grub/grub.cfg")
    assert inside("pxetwist/entries/lab/initrd.img") == b"initrd" * 100
    images = list((rig.app.config.server.state.parent / "secureboot-images").glob("*.img"))
    assert len(images) == 1
    rig._do("HEAD", f"/pxe/secureboot/{MAC}-x64.img")
    assert len(list(images[0].parent.glob("*.img"))) == 1  # cached, not rebuilt
    for bad in (f"{MAC}-mips.img", f"{MAC}-x64.iso", "nope-x64.img"):
        assert rig.get(f"/pxe/secureboot/{bad}")[0] == 404
    rig.put(f"/machines/{MAC}", {"entry": "rescue-iso"})
    code, body, _ = rig.get(f"/pxe/secureboot/{MAC}-x64.img")
    assert code == 404 and b"needs iPXE" in body


def test_autoexec_ipxe_over_http(tmp_path: Path) -> None:
    """/files/autoexec.ipxe answers the entry-point script when the TFTP root has none."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.get("/files/autoexec.ipxe")
    assert code == 200
    assert f"chain --autofree {BASE}/pxe/boot.ipxe?mac=${{mac:hexhyp}}".encode() in body

"""BootPolicy: which loader each architecture gets, and never one built for another."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxetwist.arch import BY_CODE
from pxetwist.config import load_text
from pxetwist.policy import EXPLAINED_CODES, BootPolicy, ClientFacts

BASE = "http://10.77.0.1:8080"
#: The option-93 codes the built-in [boot.files] serves, and with what.
SERVED = {0: "undionly.kpxe", 7: "ipxe.efi", 9: "ipxe.efi", 16: f"{BASE}/files/ipxe.efi",
          17: f"{BASE}/files/ipxe.efi"}


def policy(tmp_path: Path, files: str = "") -> BootPolicy:
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(exist_ok=True)
    config = load_text(f"[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n"
                       f"[boot.files]\n{files}", tmp_path)
    return BootPolicy(config.boot, BASE, "10.77.0.1")


@pytest.mark.parametrize("code", [*EXPLAINED_CODES, 20, 25, 99, 0x1234, None])
def test_built_in_files_never_cross_architectures(tmp_path: Path, code: int | None) -> None:
    """Issue 13 item 12: with the built-in [boot.files] only BIOS (and no option 93) gets
    undionly.kpxe and only x64 UEFI gets ipxe.efi (the files Debian's ipxe ships); every
    other assigned code, UEFI arm32/arm64/ia32 included, gets no loader; a code the
    registry does not assign falls back to ``default`` (SPEC DHCP-05)."""
    vendor = "HTTPClient" if code in (16, 17) else "PXEClient"
    decision = policy(tmp_path).decide(ClientFacts("52:54:00:00:00:01", code, vendor))
    expected = SERVED.get(code) if code is not None else "undionly.kpxe"
    if code is not None and code not in BY_CODE:
        expected = "undionly.kpxe"
    if code == 20:  # bios-http: the BIOS file, over HTTP
        expected = f"{BASE}/files/undionly.kpxe"
    if expected is None:
        assert (decision.how, decision.filename) == ("none", "")
        assert decision.reason.startswith("no loader for this architecture")
    else:
        assert decision.filename == expected


def test_default_applies_only_to_its_family(tmp_path: Path) -> None:
    """Issue 13 item 12: a BIOS default never reaches a UEFI or other known code; a UEFI
    default reaches UEFI codes only; unassigned codes and a default of no known kind
    (a URL) reach any code."""
    efi = policy(tmp_path, "default = loader.efi\n")
    assert efi.decide(ClientFacts("m", 10, "PXEClient")).filename == "loader.efi"
    assert efi.decide(ClientFacts("m", 1, "PXEClient")).how == "none"
    assert efi.decide(ClientFacts("m", 0, "PXEClient")).filename == "undionly.kpxe"
    bios = policy(tmp_path, "default = pxelinux.0\n")
    assert bios.decide(ClientFacts("m", 11, "PXEClient")).how == "none"
    assert bios.decide(ClientFacts("m", 1, "PXEClient")).how == "none"
    assert bios.decide(ClientFacts("m", 99, "PXEClient")).filename == "pxelinux.0"
    url = policy(tmp_path, "default = http://boot.example/any\n")
    assert url.decide(ClientFacts("m", 99, "PXEClient")).filename == "http://boot.example/any"
    named = policy(tmp_path, "uefi-arm64 = ipxe-arm64.efi\n")
    assert named.decide(ClientFacts("m", 11, "PXEClient")).filename == "ipxe-arm64.efi"
    assert named.decide(ClientFacts("m", 19, "HTTPClient")).filename == (
        f"{BASE}/files/ipxe-arm64.efi")


def test_explain_shows_no_loader(tmp_path: Path) -> None:
    """Issue 13 item 12: explain lists UEFI arm32 with no file and the reason."""
    rows = {row["code"]: row for row in policy(tmp_path).explain("52:54:00:00:00:01")}
    assert rows[10]["how"] == "none" and rows[10]["file"] == ""
    assert "no loader for this architecture" in rows[10]["reason"]
    assert "uefi-arm32" in rows[10]["reason"]


def test_architectures_without_loader(tmp_path: Path) -> None:
    """The start-up list names the architectures with no loader, and not those with one."""
    missing = policy(tmp_path).architectures_without_loader()
    assert {"uefi-arm32", "uefi-arm64", "uefi-ia32"} <= set(missing)
    assert not {"bios", "uefi-x64", "uefi-bc", "uefi-x64-http"} & set(missing)


def test_files_not_found_names_missing_loaders(tmp_path: Path) -> None:
    """Issue 13 item 12: a [boot.files] name found in neither TFTP folder is reported at
    start-up; names found in either folder, and URLs, are not."""
    checked = policy(tmp_path, "uefi-arm64 = ipxe-arm64.efi\nuefi-x64 = ipxe.efi\n"
                               "bios = sub/undionly.kpxe\n19 = http://mirror/x.efi\n")
    root, ipxe_dir = tmp_path / "tftproot", tmp_path / "ipxe"
    (root / "sub").mkdir()
    (root / "sub" / "undionly.kpxe").write_bytes(b"x")
    ipxe_dir.mkdir()
    (ipxe_dir / "ipxe.efi").write_bytes(b"x")
    missing = checked.files_not_found((root, ipxe_dir))
    assert "uefi-arm64 = ipxe-arm64.efi" in missing
    assert not [line for line in missing if line.startswith(("uefi-x64", "bios", "19"))]

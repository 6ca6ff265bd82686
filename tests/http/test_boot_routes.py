"""Boot routes: the entry point, per-MAC answers, the menu, entry scripts, lifecycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxetwist.events import Stage
from tests.http.helpers import BASE, MAC, make_rig


def test_entry_point_without_mac_chains_with_mac_and_retries(tmp_path: Path) -> None:
    """Without ?mac= the answer chains back with iPXE's MAC/arch/platform and retries."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.get("/pxe/boot.ipxe")
    script = body.decode()
    assert code == 200 and script.startswith("#!ipxe\n")
    assert f"chain --autofree {BASE}/pxe/boot.ipxe?mac=${{mac:hexhyp}}&arch=${{buildarch}}" in script
    assert "iseq ${pxetwist_tries} 3 && goto local" in script
    assert script.rstrip().endswith("exit")


def test_unknown_machine_boots_local_by_default(tmp_path: Path) -> None:
    """[boot] unknown = local: an unassigned MAC gets an explicit local-boot answer."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.get("/pxe/boot.ipxe?mac=52-54-00-12-34-56&arch=x86_64")
    assert code == 200 and body.decode().rstrip().endswith("exit")
    assert "kernel" not in body.decode() and "menu" not in body.decode()
    [event] = [e for e in rig.events.recent() if e.stage == Stage.HTTP_SCRIPT]
    assert event.mac == MAC and "local" in event.detail


def test_unknown_machine_gets_menu_when_configured(tmp_path: Path) -> None:
    """[boot] unknown = menu: an unassigned MAC gets the menu."""
    rig = make_rig(tmp_path, "[boot]\nunknown = menu\n")
    _, body, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert "choose --default" in body.decode()


def test_bad_mac_is_400(tmp_path: Path) -> None:
    """A MAC that is not one is refused on every route that takes one."""
    rig = make_rig(tmp_path)
    assert rig.get("/pxe/boot.ipxe?mac=zz:zz")[0] == 400
    assert rig.get("/api/v1/ipxe/boot.ipxe?mac=1234")[0] == 400
    assert rig.get("/api/v1/boot?mac=nope")[0] == 400
    assert rig.get("/api/v1/boot?mac=nope&format=json")[0] == 400
    assert rig.get("/machines/nope/explain")[0] == 400


def test_menu_lists_offered_entries_in_order_with_default(tmp_path: Path) -> None:
    """MENU-01/02: offered entries by order, labels, default, timeout, extra items."""
    rig = make_rig(tmp_path)
    assert rig.post("/pxe/lab/menu", {"label": "Lab (test)", "order": 1, "default": True,
                                      "kernel_args": "quiet loglevel=3"})[0] == 200
    assert rig.post("/pxe/rescue-iso/toggle")[0] == 200
    _, body, _ = rig.get("/pxe/menu.ipxe")
    script = body.decode()
    items = [line for line in script.splitlines() if line.startswith("item e-")]
    assert items == ["item e-lab Lab (test)", "item e-hello-ipxe hello.ipxe",
                     "item e-tool-efi tool.efi"]
    assert "choose --default e-lab --timeout 10000 target" in script
    for extra in ("item local ", "item shell ", "item retry "):
        assert extra in script
    _, body, _ = rig.get("/containers/lab/boot.ipxe")
    assert "console=ttyS0 token=abc quiet loglevel=3" in body.decode()


def test_menu_timeout_zero_boots_default_at_once(tmp_path: Path) -> None:
    """menu_timeout = 0 jumps to the default instead of iPXE's wait-forever 0."""
    rig = make_rig(tmp_path, "[boot]\nmenu_timeout = 0\n")
    _, body, _ = rig.get("/pxe/menu.ipxe")
    lines = body.decode().splitlines()
    assert lines[:3] == ["#!ipxe", ":start", "goto e-hello-ipxe"]


def test_empty_menu_boots_local(tmp_path: Path) -> None:
    """With nothing offered, the menu is a local-boot answer."""
    rig = make_rig(tmp_path)
    for entry in ("lab", "tool-efi", "rescue-iso", "hello-ipxe"):
        rig.post(f"/pxe/{entry}/toggle")
    _, body, _ = rig.get("/pxe/menu.ipxe")
    assert "no boot entries" in body.decode() and body.decode().rstrip().endswith("exit")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("lab", ["kernel " + BASE + "/containers/lab/files/vmlinuz?mac=${mac:hexhyp} "
                 "initrd=initrd.img console=ttyS0 token=abc",
                 "initrd --name initrd.img " + BASE
                 + "/containers/lab/files/initrd.img?mac=${mac:hexhyp}", "boot || goto failed"]),
        ("tool-efi", ["chain " + BASE + "/containers/tool-efi/files/tool.efi?mac=${mac:hexhyp}"
                      " || goto failed"]),
        ("rescue-iso", ["sanboot --no-describe " + BASE
                        + "/containers/rescue-iso/files/rescue.iso?mac=${mac:hexhyp} || goto failed"]),
        ("hello-ipxe", ["#!ipxe", "echo hello"]),
    ],
)
def test_entry_scripts_by_kind(tmp_path: Path, entry: str, expected: list[str]) -> None:
    """linux: kernel with initrd=<name>, initrd --name, boot; efi: chain; iso: sanboot;
    ipxe: the script itself."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.get(f"/containers/{entry}/boot.ipxe")
    lines = body.decode().splitlines()
    assert code == 200
    for line in expected:
        assert line in lines


def test_one_shot_install_lifecycle(tmp_path: Path) -> None:
    """Assigned once: boots the entry (installing once it fetched the kernel, not merely
    the script), then after installed boots local."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True})
    assert code == 200 and b'"state": "pending"' in body
    _, script, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert "kernel " in script.decode()
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    # (HEAD: StubTreq cannot drive static.File's producer for a GET body)
    assert rig._do("HEAD", f"/containers/lab/files/initrd.img?mac={MAC}")[0] == 200
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    assert rig._do("HEAD", f"/containers/lab/files/vmlinuz?mac={MAC}")[0] == 200
    assert rig.machines.get(MAC).state == "installing"  # type: ignore[union-attr]
    _, again, _ = rig.get(f"/api/v1/ipxe/boot.ipxe?mac={MAC}")
    assert "kernel " in again.decode()
    code, body, _ = rig.post(f"/api/v1/machines/{MAC.replace(':', '-')}/installed")
    assert code == 200 and b'"state": "installed"' in body
    _, final, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert "kernel" not in final.decode() and final.decode().rstrip().endswith("exit")
    _, status, _ = rig.get(f"/api/v1/boot?mac={MAC}&format=json")
    assert b'"local": true' in status


def test_assignment_to_missing_entry_boots_local(tmp_path: Path) -> None:
    """A machine assigned an entry that has since vanished gets local boot, not an error."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": False})
    rig.catalog.entries.pop("lab")
    _, body, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert body.decode().rstrip().endswith("exit")


def test_explain_says_what_and_why_without_side_effects(tmp_path: Path) -> None:
    """explain shows the decision and script for a pending MAC and leaves it pending."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True})
    code, body, _ = rig.get(f"/machines/{MAC}/explain")
    assert code == 200
    import json

    answer = json.loads(body)
    assert answer["decision"] == "assigned entry lab"
    assert "kernel " in answer["script"] and answer["entry"]["id"] == "lab"
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]


def test_boot_script_shortcut_answers_as_the_routed_script(tmp_path: Path) -> None:
    """GET /pxe/boot.ipxe (served before Klein) matches the Klein-routed lifecycle route;
    HEAD still goes through Klein."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": False})
    code, fast, response = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    _, routed, _ = rig.get(f"/api/v1/ipxe/boot.ipxe?mac={MAC}")
    assert code == 200 and fast == routed and b"kernel " in fast
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    code, body, _ = rig._do("HEAD", f"/pxe/boot.ipxe?mac={MAC}")
    assert code == 200 and body == b""

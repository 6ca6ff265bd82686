"""Boot and file routes, issue 13: Deferreds handled, boot files as bytes, mirror URLs,
nested /files paths, vanished files, one boot plan for script, explain and /api/v1/boot,
PureBoot's routes, and who an HTTP fetch is charged to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from pxetwist.events import Stage
from pxetwist.http import ipxe
from pxetwist.machine_source import MachineSource
from tests.http.helpers import BASE, MAC, Rig, make_rig

API = "http://machines.example:9000/api"


class HeldGetter:
    """An HTTP client whose answers the test fires (or never fires)."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def get(self, url: str, /) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


class Answer:
    """A treq-like response carrying JSON."""

    def __init__(self, body: Any, code: int = 200) -> None:
        self.code = code
        self._body = body

    def json(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        d.callback(self._body)
        return d

    def content(self) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        d.callback(b"")
        return d


def with_source(rig: Rig) -> HeldGetter:
    getter = HeldGetter()
    rig.app.machine_source = MachineSource(API, getter, rig.clock)
    return getter


def logged(events: list[dict[str, Any]]) -> Any:
    def observe(event: dict[str, Any]) -> None:
        events.append(event)
    globalLogPublisher.addObserver(observe)
    return lambda: globalLogPublisher.removeObserver(observe)


# -- item 5: Deferred hygiene -------------------------------------------------------------

def test_failed_lifecycle_write_is_logged_with_the_mac(tmp_path: Path) -> None:
    """A failing script_served Deferred is not dropped: it is logged with MAC and entry,
    and the script is served all the same."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True})
    rig.machines.script_served = lambda mac, entry, *_: fail(RuntimeError("disk full"))  # type: ignore[method-assign]
    events: list[dict[str, Any]] = []
    stop = logged(events)
    try:
        code, body, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    finally:
        stop()
    assert code == 200 and b"kernel " in body
    [failure] = [e for e in events if e.get("log_failure") is not None]
    assert failure["mac"] == MAC and failure["entry"] == "lab"
    assert failure["log_failure"].check(RuntimeError)


def test_fast_path_writes_nothing_to_a_client_that_left(tmp_path: Path) -> None:
    """The machine source answers after the client hung up: nothing is written, nothing
    raised (notifyFinish, not Twisted's private _disconnected)."""
    rig = make_rig(tmp_path)
    getter = with_source(rig)
    request = DummyRequest([b"pxe", b"boot.ipxe"])
    request.path = b"/pxe/boot.ipxe"
    request.args = {b"mac": [MAC.encode()]}
    rig.app.resource().render(request)
    request.processingFailed(Failure(ConnectionDone()))
    getter.pending[0].callback(Answer({}, 404))
    assert request.written == [] and request.finished == 0


# -- item 7: boot files are bytes ---------------------------------------------------------

def test_gz_and_bz2_files_have_no_content_encoding(tmp_path: Path) -> None:
    """initrd.gz and x.bz2 are sent as they are: no Content-Encoding, a plain type."""
    rig = make_rig(tmp_path)
    (tmp_path / "tftproot" / "initrd.gz").write_bytes(b"\x1f\x8b" + b"\0" * 30)
    (tmp_path / "tftproot" / "x.bz2").write_bytes(b"BZh9")
    (tmp_path / "catalog" / "lab" / "initrd.gz").write_bytes(b"\x1f\x8b")
    for path, kind in (("/files/initrd.gz", "application/gzip"),
                       ("/files/x.bz2", "application/octet-stream"),
                       ("/containers/lab/files/initrd.gz", "application/gzip")):
        code, _, response = rig._do("HEAD", path)
        assert code == 200, path
        # (StubTreq itself adds an empty one; tests/http/test_loopback_boot.py uses curl)
        assert not any(response.headers.getRawHeaders("content-encoding", [])), path
        assert response.headers.getRawHeaders("content-type") == [kind], path


# -- item 8: entries whose file is a URL --------------------------------------------------

def add_url_entries(rig: Rig, mirror: str) -> None:
    for kind, name in (("ipxe", "boot.ipxe"), ("file", "disk.img"), ("efi", "shell.efi"),
                       ("iso", "live.iso")):
        folder = rig.tmp / "catalog" / f"m-{kind}"
        folder.mkdir()
        (folder / "entry.ini").write_text(f"[entry]\nkind = {kind}\nfile = {mirror}/{name}\n")
    rig.catalog.load()


def test_url_entries_boot_from_the_mirror(tmp_path: Path) -> None:
    """ipxe/file/efi/iso entries with a URL file: the script goes to the URL itself, and
    /containers/{id} redirects there instead of a 404."""
    rig = make_rig(tmp_path)
    add_url_entries(rig, "http://mirror.example/os")
    for kind, name, verb in (("ipxe", "boot.ipxe", "chain"), ("file", "disk.img", "chain"),
                             ("efi", "shell.efi", "chain"), ("iso", "live.iso", "sanboot")):
        script = rig.get(f"/containers/m-{kind}/boot.ipxe")[1].decode()
        [line] = [ln for ln in script.splitlines() if ln.startswith(verb)]
        assert f"http://mirror.example/os/{name} || goto failed" in line, (kind, script)
        d = rig.client.get(f"{BASE}/containers/m-{kind}", allow_redirects=False)
        rig.client.flush()
        response = SynchronousTestCase().successResultOf(d)
        assert response.code == 302
        assert response.headers.getRawHeaders("location") == [f"http://mirror.example/os/{name}"]


# -- item 9: nested /files paths ----------------------------------------------------------

def test_nested_file_paths_are_served(tmp_path: Path) -> None:
    """/files/sub/nested.txt serves sub/nested.txt of the TFTP root (not Klein's 404)."""
    rig = make_rig(tmp_path)
    (tmp_path / "tftproot" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "tftproot" / "sub" / "nested.txt").write_bytes(b"nested")
    (tmp_path / "tftproot" / "sub" / "deeper" / "x.cfg").write_bytes(b"deeper!")
    for path, size in (("/files/sub/nested.txt", "6"), ("/files/sub/deeper/x.cfg", "7"),
                       ("/files/sub%2Fnested.txt", "6")):
        code, _, response = rig._do("HEAD", path)
        assert code == 200, path
        assert response.headers.getRawHeaders("content-length") == [size]
    code, body, _ = rig.get("/files/sub/missing.txt")
    assert code == 404 and "error" in json.loads(body)


# -- item 10: files that vanished before the rescan ----------------------------------------

def test_vanished_ipxe_script_is_404_json_and_rescans(tmp_path: Path) -> None:
    """A deleted .ipxe file: its script route is a 404 with a JSON reason (not a 500), and
    the catalog rescans, after which the entry is gone."""
    rig = make_rig(tmp_path)
    (tmp_path / "catalog" / "hello.ipxe").unlink()
    code, body, _ = rig.get("/containers/hello-ipxe/boot.ipxe")
    assert code == 404 and "gone" in json.loads(body)["error"]
    rig.clock.advance(1)
    assert rig.catalog.view("hello-ipxe") is None


def test_vanished_kernel_and_file_are_404_json_and_rescan(tmp_path: Path) -> None:
    """A deleted kernel (files/ route) or main file (/containers/{id}): 404 JSON, rescan."""
    rig = make_rig(tmp_path)
    (tmp_path / "catalog" / "lab" / "vmlinuz").unlink()
    (tmp_path / "catalog" / "tool.efi").unlink()
    for path in ("/containers/lab/files/vmlinuz", "/containers/lab", "/containers/tool-efi"):
        code, body, _ = rig.get(path)
        assert code == 404 and "gone" in json.loads(body)["error"], path
    rig.clock.advance(1)
    assert rig.catalog.view("lab") is None and rig.catalog.view("tool-efi") is None
    assert any(p.key == "kernel" for p in rig.catalog.problems)


# -- item 11: one plan for the boot script, explain and /api/v1/boot ------------------------

SOURCE_ANSWER = {"kernel": "http://mirror.example/vmlinuz", "initrd": [], "cmdline": "x=1"}


def test_explain_and_api_boot_follow_the_machine_source(tmp_path: Path) -> None:
    """With [boot] api_url answering for the MAC, explain and /api/v1/boot say it boots the
    source's kernel, like the boot script does, not "local boot"."""
    rig = make_rig(tmp_path, f"[boot]\napi_url = {API}\n")
    getter = with_source(rig)
    d = rig.client.get(f"{BASE}/machines/{MAC}/explain")
    getter.pending[0].callback(Answer(SOURCE_ANSWER))
    answer = json.loads(_body(rig, d))
    assert answer["plan"]["action"] == "external"
    assert answer["decision"] == f"machine source {API}"
    assert "kernel http://mirror.example/vmlinuz x=1" in answer["script"]
    code, body, _ = rig.get(f"/api/v1/boot?mac={MAC}&format=json")  # cached answer
    status = json.loads(body)
    assert code == 200 and status["local"] is False and status["plan"]["action"] == "external"
    _, script, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert script.decode() == answer["script"]


def test_explain_says_when_the_machine_source_did_not_answer(tmp_path: Path) -> None:
    """A machine source that times out: explain says so, and what the catalog gives."""
    rig = make_rig(tmp_path, f"[boot]\napi_url = {API}\n")
    with_source(rig)
    d = rig.client.get(f"{BASE}/machines/{MAC}/explain")
    rig.clock.advance(5)
    answer = json.loads(_body(rig, d))
    assert answer["plan"]["machine_source"].startswith("no answer")
    assert answer["plan"]["action"] == "local"
    assert answer["decision"].startswith("machine source no answer")


def _body(rig: Rig, d: Deferred[Any]) -> bytes:
    rig.client.flush()
    response = SynchronousTestCase().successResultOf(d)
    content = response.content()
    rig.client.flush()
    result: bytes = SynchronousTestCase().successResultOf(content)
    return result


# -- item 13: PureBoot's routes ------------------------------------------------------------

def test_pureboot_boot_route_answers_the_same_script(tmp_path: Path) -> None:
    """/api/v1/boot?mac= (PureBoot's boot script chains there) answers an iPXE script that
    boots the machine as /pxe/boot.ipxe?mac= does, lifecycle included."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True})
    code, body, response = rig.get(f"/api/v1/boot?mac={MAC.replace(':', '-')}")
    assert code == 200 and body.startswith(b"#!ipxe\n") and b"kernel " in body
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert rig.get(f"/pxe/boot.ipxe?mac={MAC}")[1] == body


def test_pureboot_json_only_when_asked(tmp_path: Path) -> None:
    """JSON with Accept: application/json or ?format=json; a missing MAC is 422, a bad one
    400, both with a JSON reason."""
    rig = make_rig(tmp_path)
    for path, headers in ((f"/api/v1/boot?mac={MAC}", {"Accept": "application/json"}),
                          (f"/api/v1/boot?mac={MAC}&format=json", {})):
        code, body, _ = rig.get(path, headers=headers)
        assert code == 200 and json.loads(body)["mac"] == MAC
    code, body, _ = rig.get("/api/v1/boot", headers={"Accept": "application/json"})
    assert code == 422 and json.loads(body)["error"]
    code, body, _ = rig.get("/api/v1/boot?mac=zz&format=json")
    assert code == 400 and json.loads(body)["error"]


def test_pureboot_embedded_route_without_mac_chains_back(tmp_path: Path) -> None:
    """/api/v1/ipxe/boot.ipxe without a MAC (PureBoot's embedded script) answers a script
    chaining back to itself with ${mac:hexhyp}."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.get("/api/v1/ipxe/boot.ipxe")
    script = body.decode()
    assert code == 200 and script.startswith("#!ipxe\n")
    assert f"chain --autofree {BASE}/api/v1/ipxe/boot.ipxe?{ipxe.BOOT_QUERY}" in script


# -- item 18: who an HTTP fetch without ?mac= is charged to ---------------------------------

def test_fetch_without_mac_is_not_charged_to_the_last_mac_at_that_ip(tmp_path: Path) -> None:
    """Behind NAT one IP is many machines: a file fetch without ?mac= records the IP alone,
    unless a current lease names the MAC."""
    rig = make_rig(tmp_path)
    rig.get(f"/pxe/boot.ipxe?mac={MAC}")  # MAC seen at StubTreq's client IP
    rig._do("HEAD", "/containers/lab/files/vmlinuz")
    [event] = [e for e in rig.events.recent() if e.stage == Stage.HTTP_KERNEL]
    assert event.mac == "" and event.ip
    rig.app.lease_mac = lambda ip: "52:54:00:00:00:77" if ip == event.ip else ""
    rig._do("HEAD", "/containers/lab/files/vmlinuz")
    assert [e.mac for e in rig.events.recent() if e.stage == Stage.HTTP_KERNEL][-1] == \
        "52:54:00:00:00:77"


def test_service_charges_fetches_to_current_leases_only(tmp_path: Path) -> None:
    """The service's lease lookup names the MAC of a bound, unexpired lease, else nobody."""
    from pxetwist.service import current_lease_mac
    from pxetwist.store import LeaseRow

    class Pool:
        rows = {"10.0.0.5": LeaseRow("10.0.0.5", MAC, "", "", 100.0, "bound"),
                "10.0.0.6": LeaseRow("10.0.0.6", "52:54:00:00:00:06", "", "", 100.0,
                                     "declined")}

        def holder(self, ip: str) -> LeaseRow | None:
            return self.rows.get(ip)

    lease_mac = current_lease_mac(Pool())  # type: ignore[arg-type]
    assert lease_mac("10.0.0.5") == MAC
    assert lease_mac("10.0.0.6") == "" and lease_mac("10.0.0.7") == ""

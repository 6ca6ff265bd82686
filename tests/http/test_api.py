"""Management routes: JSON shapes, validation, auth, injection refused, events feed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pxetwist.events import Stage
from tests.http.helpers import MAC, make_rig
from tests.ipxe_lines import commands, kernel_cmdline, script_lines

INJECTIONS = [
    "evil\nshell", "x\r\nchain http://evil/", "${root-path}", "a && shell", "a || shell",
    "# comment", "label; reboot", "a\tb", "quote\"s", "back\\slash", "$(id)", "`id`",
    "a\x00b", "<script>", "a|b", "a&b", "x" * 81,
]


@pytest.mark.parametrize("label", INJECTIONS)
def test_labels_that_could_inject_ipxe_commands_are_refused(tmp_path: Path, label: str) -> None:
    """Newlines, ${...}, &&, ||, #, ; and other specials in a label: 400, nothing stored."""
    rig = make_rig(tmp_path)
    code, body, _ = rig.post("/pxe/lab/menu", {"label": label})
    assert code == 400 and "label" in json.loads(body)["error"]
    assert rig.catalog.view("lab").label == "Lab payload"  # type: ignore[union-attr]


#: Kernel args iPXE cannot be given literally: ${...}, # first, ||, &&, ; alone, controls.
IPXE_SPECIAL_ARGS = [*INJECTIONS[:6], "a ; reboot", "a\tb", "a\x00b", "a=1 ${x}",
                     "console=ttyS0\ninitrd x"]
#: Kernel args that look alarming but reach the kernel exactly as written.
LITERAL_ARGS = ["label; reboot", 'quote"s', "back\\slash", "$(id)", "`id`", "a|b", "a&b",
                "url=http://h/preseed.cfg?host=a&x=1", "trailing\\", "cost=$5 {x}"]


@pytest.mark.parametrize("args", IPXE_SPECIAL_ARGS)
def test_kernel_args_that_could_inject_are_refused(tmp_path: Path, args: str) -> None:
    """Kernel args with iPXE specials: 400; the entry script is unchanged."""
    rig = make_rig(tmp_path)
    before = rig.get("/containers/lab/boot.ipxe")[1]
    code, body, _ = rig.post("/pxe/lab/menu", {"kernel_args": args})
    assert code == 400 and "kernel_args" in json.loads(body)["error"]
    assert rig.get("/containers/lab/boot.ipxe")[1] == before


@pytest.mark.parametrize("args", LITERAL_ARGS)
def test_kernel_args_reach_the_kernel_exactly(tmp_path: Path, args: str) -> None:
    """Other kernel args are taken and reach the kernel as written, read iPXE's way."""
    rig = make_rig(tmp_path)
    assert rig.post("/pxe/lab/menu", {"kernel_args": args})[0] == 200
    script = rig.get("/containers/lab/boot.ipxe")[1].decode()
    assert kernel_cmdline(script) == f"initrd=initrd.img console=ttyS0 token=abc {args}"
    assert [argv[0] for line in script_lines(script) for argv in commands(line)
            if argv[0] in ("kernel", "shell", "reboot", "chain")] == ["kernel"]


def test_entry_ini_text_is_sanitised_in_scripts(tmp_path: Path) -> None:
    """Even operator-written entry.ini text cannot put a command on a new script line."""
    rig = make_rig(tmp_path)
    folder = tmp_path / "catalog" / "sneaky"
    folder.mkdir()
    (folder / "entry.ini").write_text(
        "[entry]\nname = Sneaky ${x} && shell\nkernel = k\ncmdline = a=1 ${evil} || shell\n")
    (folder / "k").write_bytes(b"k")
    rig.catalog.load()
    _, body, _ = rig.get("/containers/sneaky/boot.ipxe")
    script = body.decode()
    assert "${x}" not in script and "|| shell" not in script and "&&" not in script
    # the operator's own ${...} in cmdline is an iPXE setting, on purpose; || is dropped
    assert kernel_cmdline(script, {"evil": "E"}) == "a=1 E shell"
    assert "&& shell" not in script
    _, menu, _ = rig.get("/pxe/menu.ipxe")
    assert "${x}" not in menu.decode()


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"label": 5}', b'{"order": "first"}', b'{"order": true}',
     b'{"default": "yes"}', b'{"colour": "red"}', b'{"pxe": 1}', b"{" + b" " * 70000 + b"}"],
)
def test_bad_menu_bodies_are_400_with_reason(tmp_path: Path, body: bytes) -> None:
    """Malformed JSON, wrong types, unknown fields and oversized bodies: 400 + reason."""
    rig = make_rig(tmp_path)
    code, answer, _ = rig.post("/pxe/lab/menu", body)
    assert code == 400 and json.loads(answer)["error"]


@pytest.mark.parametrize(
    "body",
    [b'{}', b'{"entry": 5}', b'{"entry": "lab", "once": "yes"}', b'{"entry": ""}',
     b'{"entry": "lab", "extra": 1}', b"null"],
)
def test_bad_assignments_are_400(tmp_path: Path, body: bytes) -> None:
    """PUT /machines/{mac} bodies are checked."""
    rig = make_rig(tmp_path)
    code, answer, _ = rig.put(f"/machines/{MAC}", body)
    assert code == 400 and json.loads(answer)["error"]


def test_unknown_things_are_404(tmp_path: Path) -> None:
    """Unknown entries and never-seen machines are 404 with a reason."""
    rig = make_rig(tmp_path)
    assert rig.post("/pxe/nope/toggle")[0] == 404
    assert rig.post("/pxe/nope/menu", {"label": "x"})[0] == 404
    assert rig.put(f"/machines/{MAC}", {"entry": "nope"})[0] == 404
    assert rig.get(f"/machines/{MAC}")[0] == 404
    assert rig.get("/containers/nope/boot.ipxe")[0] == 404
    assert rig.get("/containers/nope/info")[0] == 404


def test_catalog_json_shapes(tmp_path: Path) -> None:
    """/containers, /pxe, /containers/{id}/info follow docs/API.md."""
    rig = make_rig(tmp_path)
    body = json.loads(rig.get("/containers")[1])
    ids = [e["id"] for e in body["entries"]]
    assert ids == ["hello-ipxe", "lab", "rescue-iso", "tool-efi"] and body["errors"] == []
    assert set(body["entries"][0]) >= {"id", "name", "kind", "pxe", "label", "order",
                                        "default", "kernel_args"}
    code, answer, _ = rig.post("/pxe/lab/toggle")
    assert code == 200 and json.loads(answer)["pxe"] is False
    pxe = json.loads(rig.get("/pxe")[1])
    assert "lab" not in [e["id"] for e in pxe["entries"]] and pxe["timeout"] == 10
    assert json.loads(rig.get("/containers/lab/info")[1])["kind"] == "linux"
    refreshed = json.loads(rig.post("/catalog/refresh")[1])
    assert refreshed == {"entries": 4, "errors": 0}


def test_machines_and_history(tmp_path: Path) -> None:
    """/machines lists records; /machines/{mac} adds the stored boot history."""
    rig = make_rig(tmp_path)
    rig.events.publish(Stage.DHCP_ACK, mac=MAC, ip="10.77.0.50", arch="bios")
    machines = json.loads(rig.get("/machines")[1])["machines"]
    assert [(m["mac"], m["ip"], m["arch"]) for m in machines] == [(MAC, "10.77.0.50", "bios")]
    one = json.loads(rig.get(f"/machines/{MAC.upper().replace(':', '-')}")[1])
    assert [h["stage"] for h in one["history"]] == [Stage.DHCP_ACK]


def test_events_filter_and_long_poll(tmp_path: Path) -> None:
    """/events?mac= filters; ?after=N&wait=S answers when a newer event arrives."""
    rig = make_rig(tmp_path)
    rig.events.publish(Stage.DHCP_OFFER, mac=MAC)
    rig.events.publish(Stage.DHCP_OFFER, mac="52:54:00:00:00:99")
    body = json.loads(rig.get(f"/events?mac={MAC}")[1])
    assert [e["mac"] for e in body["events"]] == [MAC] and body["last"] == 2
    d = rig.client.get("http://x/events?after=2&wait=10")
    rig.client.flush()
    early: list[object] = []
    d.addCallback(lambda response: early.append(response) or response)
    assert early == []
    rig.events.publish(Stage.DHCP_ACK, mac=MAC)
    rig.client.flush()
    from twisted.trial.unittest import SynchronousTestCase

    response = SynchronousTestCase().successResultOf(d)
    content = SynchronousTestCase().successResultOf(response.content())
    assert [e["stage"] for e in json.loads(content)["events"]] == [Stage.DHCP_ACK]
    assert rig.get("/events?after=-1")[0] == 400
    assert rig.get("/events?mac=bad")[0] == 400


def test_long_poll_times_out_empty(tmp_path: Path) -> None:
    """A long poll with nothing new answers an empty list after the wait."""
    rig = make_rig(tmp_path)
    d = rig.client.get("http://x/events?after=0&wait=5")
    rig.client.flush()
    rig.clock.advance(5)
    rig.client.flush()
    from twisted.trial.unittest import SynchronousTestCase

    response = SynchronousTestCase().successResultOf(d)
    assert json.loads(SynchronousTestCase().successResultOf(response.content()))["events"] == []


def test_token_is_required_for_every_mutation(tmp_path: Path) -> None:
    """With api_token set: no header or a wrong token is 401; the right one works."""
    rig = make_rig(tmp_path, "[http]\napi_token = s3cret\n")
    mutations = [("post", "/pxe/lab/toggle", None), ("post", "/pxe/lab/menu", {"label": "x"}),
                 ("post", "/catalog/refresh", None), ("put", f"/machines/{MAC}", {"entry": None}),
                 ("post", f"/api/v1/machines/{MAC}/installed", None)]
    for method, path, body in mutations:
        call = getattr(rig, method)
        assert call(path, body)[0] == 401
        assert call(path, body, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(path, body, headers={"Authorization": "Basic s3cret"})[0] == 401
        assert call(path, body, headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_without_token_only_loopback_may_mutate(tmp_path: Path) -> None:
    """No api_token: mutations from a non-loopback address are 403."""
    from pxetwist.http import api

    class Remote:
        def getHeader(self, name: bytes) -> None:
            return None

        def getClientAddress(self) -> object:
            class Address:
                host = "10.77.0.50"
            return Address()

    class Local(Remote):
        def getClientAddress(self) -> object:
            class Address:
                host = "127.0.0.1"
            return Address()

    assert api.refuse_unauthorised(Remote(), "")[1] == 403  # type: ignore[arg-type,index]
    assert api.refuse_unauthorised(Local(), "") is None  # type: ignore[arg-type]


def test_metrics_and_health(tmp_path: Path) -> None:
    """/metrics is Prometheus text with our counters; /health says ok."""
    rig = make_rig(tmp_path)
    rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    code, body, _ = rig.get("/metrics")
    assert code == 200 and b"pxetwist_http_requests_total" in body
    health = json.loads(rig.get("/health")[1])
    assert health["status"] == "ok"
    assert health["database"] == {"backend": "sqlite", "ok": True}


def test_leases_route_reads_the_store(tmp_path: Path) -> None:
    """/leases lists the store's leases."""
    from pxetwist.store import LeaseRow

    rig = make_rig(tmp_path)
    rig.app.store.put_lease(LeaseRow("10.77.0.50", MAC, "", "vm", 99.0, "bound"))
    leases = json.loads(rig.get("/leases")[1])["leases"]
    assert leases == [{"ip": "10.77.0.50", "mac": MAC, "client_id": "", "hostname": "vm",
                       "expires": 99.0, "state": "bound"}]


def test_menu_order_null_drops_the_explicit_order(tmp_path: Path) -> None:
    """POST /pxe/{id}/menu with "order": null resets the order (docs/API.md: int|null)."""
    rig = make_rig(tmp_path)
    assert json.loads(rig.post("/pxe/lab/menu", {"order": 1})[1])["order"] == 1
    code, answer, _ = rig.post("/pxe/lab/menu", {"order": None, "label": "Lab"})
    assert code == 200 and json.loads(answer)["order"] is None
    assert json.loads(rig.get("/containers/lab/info")[1])["label"] == "Lab"


def test_toggle_body_sets_the_state_and_no_body_flips(tmp_path: Path) -> None:
    """POST /pxe/{id}/toggle with {"enabled": b} (or {"pxe": b}) sets it, twice the same;
    no body flips; any other body is 400 JSON (issue 13 item 14)."""
    rig = make_rig(tmp_path)
    for _ in range(2):
        code, answer, _ = rig.post("/pxe/lab/toggle", {"enabled": False})
        assert code == 200 and json.loads(answer)["pxe"] is False
    assert json.loads(rig.post("/pxe/lab/toggle", {"pxe": True})[1])["pxe"] is True
    assert json.loads(rig.post("/pxe/lab/toggle", {"pxe": True})[1])["pxe"] is True
    assert json.loads(rig.post("/pxe/lab/toggle")[1])["pxe"] is False
    for bad in ({"enabled": "yes"}, {"state": True}, {"enabled": True, "pxe": True}, [True]):
        code, answer, _ = rig.post("/pxe/lab/toggle", bad)
        assert code == 400 and json.loads(answer)["error"]
    assert rig.catalog.view("lab").pxe is False  # type: ignore[union-attr]


@pytest.mark.parametrize("entry", ["tool-efi", "rescue-iso", "hello-ipxe"])
def test_kernel_args_refused_for_entries_that_cannot_use_them(tmp_path: Path,
                                                              entry: str) -> None:
    """kernel_args on an efi/iso/ipxe entry is 400, not silently stored; "" (reset) is
    fine, and linux entries take them (issue 13 item 19)."""
    rig = make_rig(tmp_path)
    code, answer, _ = rig.post(f"/pxe/{entry}/menu", {"kernel_args": "quiet"})
    assert code == 400 and "kernel_args" in json.loads(answer)["error"]
    assert json.loads(rig.get(f"/containers/{entry}/info")[1])["kernel_args"] == ""
    assert rig.post(f"/pxe/{entry}/menu", {"kernel_args": ""})[0] == 200
    assert json.loads(rig.post("/pxe/lab/menu", {"kernel_args": "quiet"})[1])[
        "kernel_args"] == "quiet"


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("GET", "/api/v1/nope"), ("GET", "/machines/x/y/z"),
    ("DELETE", "/machines/52:54:00:12:34:56"), ("PUT", "/containers"), ("POST", "/health"),
    ("DELETE", "/pxe/lab/toggle")])
def test_unknown_routes_and_wrong_methods_answer_json(tmp_path: Path, method: str,
                                                      path: str) -> None:
    """404 and 405 are JSON {"error": ...} like every API error; 405 keeps Allow
    (issue 13 item 16)."""
    rig = make_rig(tmp_path)
    code, body, response = rig._do(method, path)
    assert code in (404, 405)
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(body)["error"]
    if code == 405:
        assert response.headers.getRawHeaders(b"allow")


def test_wrong_method_on_a_script_route_is_ipxe_text(tmp_path: Path) -> None:
    """A script path keeps answering something iPXE can parse (issue 13 item 16)."""
    rig = make_rig(tmp_path)
    code, body, response = rig.post("/pxe/menu.ipxe")
    assert code == 405 and body.startswith(b"#!ipxe\n")
    assert rig.get("/pxe/nothing.ipxe")[1].startswith(b"#!ipxe\n")


def test_put_machine_defaults_to_permanent_like_the_cli(tmp_path: Path) -> None:
    """PUT /machines/{mac} without "once" is a permanent assignment, as `pxetwist assign`
    without --once (issue 13 item 25)."""
    rig = make_rig(tmp_path)
    answer = json.loads(rig.put(f"/machines/{MAC}", {"entry": "lab"})[1])
    assert (answer["state"], answer["once"]) == ("assigned", False)


def test_installer_reports_installed_with_its_callback_token(tmp_path: Path) -> None:
    """A one-shot machine reports installed with the token in its installed_url, no admin
    token; a wrong token is 403 JSON; the token of a previous assignment no longer works;
    the token survives a restart (issue 13 item 15)."""
    from urllib.parse import urlsplit

    from pxetwist.machines import MachineRegistry
    from pxetwist.store import Store

    rig = make_rig(tmp_path, "[http]\napi_token = s3cret\n")
    admin = {"Authorization": "Bearer s3cret"}
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True}, headers=admin)
    url = json.loads(rig.get(f"/machines/{MAC}")[1])["installed_url"]
    assert url.startswith("http://10.77.0.1:8080/api/v1/machines/")
    parts = urlsplit(url)
    path = parts.path + "?" + parts.query
    code, answer, _ = rig.get(path.replace("token=", "token=0"))
    assert code == 403 and "token" in json.loads(answer)["error"]
    assert rig.get(f"/api/v1/machines/{MAC}/installed?token=")[0] == 403
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    # a restart: same secret, same token
    again = MachineRegistry(Store(tmp_path / "state.sqlite"), rig.events, rig.clock)
    again.start()
    assert again.callback_token(MAC) == parts.query.split("=", 1)[1]
    code, answer, _ = rig.get(path)
    assert code == 200 and json.loads(answer)["state"] == "installed"
    assert rig.post(path)[0] == 200
    # a new assignment: the old token is void, the new one works
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True}, headers=admin)
    assert rig.post(path)[0] == 403
    fresh = json.loads(rig.get(f"/machines/{MAC}")[1])["installed_url"]
    assert fresh != url
    assert rig.post(urlsplit(fresh).path + "?" + urlsplit(fresh).query)[0] == 200
    # another machine's token is not this one's
    other = "52:54:00:00:00:77"
    rig.put(f"/machines/{other}", {"entry": "lab", "once": True}, headers=admin)
    assert rig.post(f"/api/v1/machines/{other}/installed?{urlsplit(fresh).query}")[0] == 403
    assert rig.post(f"/api/v1/machines/{other}/installed", headers=admin)[0] == 200


def test_anonymous_boot_requests_cannot_grow_machines_without_bound(tmp_path: Path) -> None:
    """With [boot] max_machines = 50, 300 made-up MACs asking for boot.ipxe leave 50 records
    (the newest), on disk too; assigned machines are never forgotten (issue 13 item 4)."""
    from pxetwist.store import Store

    rig = make_rig(tmp_path, "[boot]\nmax_machines = 50\n")
    keep = "52:54:00:ff:ff:01"
    rig.put(f"/machines/{keep}", {"entry": "lab"})
    for n in range(300):
        rig.clock.advance(1)
        rig.get(f"/pxe/boot.ipxe?mac=02:00:00:00:{n // 256:02x}:{n % 256:02x}")
    rig.clock.advance(1)
    assert rig.machines.count() == 51 and rig.machines.get(keep) is not None
    assert rig.machines.get("02:00:00:00:00:00") is None  # the oldest went first
    assert rig.machines.get("02:00:00:00:01:2b") is not None  # the newest stays
    stored = Store(tmp_path / "state.sqlite").machines_now()
    assert len(stored) == 51 and keep in {m.mac for m in stored}


def test_machines_list_is_paged(tmp_path: Path) -> None:
    """/machines?limit=N&after=MAC pages by MAC with a next cursor; bad values are 400
    (issue 13 item 4)."""
    rig = make_rig(tmp_path)
    macs = [f"02:00:00:00:00:{n:02x}" for n in range(7)]
    for mac in reversed(macs):
        rig.events.publish(Stage.DHCP_OFFER, mac=mac)
    seen: list[str] = []
    after = ""
    while True:
        body = json.loads(rig.get(f"/machines?limit=3{'&after=' + after if after else ''}")[1])
        assert len(body["machines"]) <= 3 and body["total"] == 7
        seen += [m["mac"] for m in body["machines"]]
        if body["next"] is None:
            break
        after = body["next"]
    assert seen == macs
    assert json.loads(rig.get("/machines")[1])["next"] is None
    for bad in ("limit=0", "limit=x", "limit=100000", "after=nope"):
        code, answer, _ = rig.get(f"/machines?{bad}")
        assert code == 400 and json.loads(answer)["error"]

"""Unattended installs over HTTP (issue 15): per-machine templates, templated kernel lines,
hostname and vars on machines, bulk assignment, the installed callback's token matrix and
the lifecycle events."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.web.resource import Resource

from pxetwist.http.api import BadRequestError
from pxetwist.http.unattended import check_hostname
from tests.http.helpers import BASE, MAC, Rig, make_rig

HYPHEN = MAC.replace(":", "-")


def add_installer(rig: Rig, cmdline: str = "auto=true url={{ templates_url }}preseed.cfg "
                                           "hostname={{ hostname }} BOOTIF=01-${mac:hexhyp}",
                  preseed: str = "host {{ hostname }} role {{ vars.role }} cb "
                                 "{{ installed_url }}\n") -> None:
    folder = rig.tmp / "catalog" / "inst"
    (folder / "templates").mkdir(parents=True)
    (folder / "linux").write_bytes(b"kernel")
    (folder / "initrd.gz").write_bytes(b"\x1f\x8b")
    (folder / "entry.ini").write_text(
        f"[entry]\nname = Installer\nkernel = linux\ninitrd = initrd.gz\ncmdline = {cmdline}\n"
        "[vars]\nrole = base\nsite = lon\n")
    (folder / "templates" / "preseed.cfg").write_text(preseed)
    (folder / "templates" / "user-data").write_text("#cloud-config\nhostname: {{ hostname }}\n")
    rig.catalog.load()


def body(answer: tuple[int, bytes, Any]) -> Any:
    return json.loads(answer[1])


def test_template_rendered_for_the_machine(tmp_path: Path) -> None:
    """GET /machines/{mac}/templates/{name} renders the machine's entry's template with its
    hostname, vars (machine's over entry's) and callback URL; an event records the fetch."""
    rig = make_rig(tmp_path)
    add_installer(rig)
    rig.put(f"/machines/{MAC}", {"entry": "inst", "once": True, "hostname": "db1.example",
                                 "vars": {"role": "db"}})
    code, text, response = rig.get(f"/machines/{HYPHEN}/templates/preseed.cfg")
    url = body(rig.get(f"/machines/{MAC}"))["installed_url"]
    assert code == 200 and text.decode() == f"host db1.example role db cb {url}\n"
    assert response.headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    rig.clock.advance(1)
    events = [e for e in rig.events.recent(mac=MAC) if e.stage == "http.template"]
    assert [e.detail for e in events] == ["inst preseed.cfg"]
    links = body(rig.get(f"/machines/{MAC}"))["templates"]
    assert links == {"preseed.cfg": f"{BASE}/machines/{HYPHEN}/templates/preseed.cfg",
                     "user-data": f"{BASE}/machines/{HYPHEN}/templates/user-data"}


def test_template_404s_are_json(tmp_path: Path) -> None:
    """No entry assigned, no such template, a never-seen MAC: 404 with a JSON reason."""
    rig = make_rig(tmp_path)
    add_installer(rig)
    assert rig.get(f"/machines/{MAC}/templates/preseed.cfg")[0] == 404
    rig.put(f"/machines/{MAC}", {"entry": "inst"})
    for name in ("nothing", "..%2Fentry.ini", "%2Fetc%2Fpasswd", ".hidden"):
        code, answer, _ = rig.get(f"/machines/{MAC}/templates/{name}")
        assert code == 404 and json.loads(answer)["error"], name
    rig.put(f"/machines/{MAC}", {"entry": None})
    assert "no entry" in body(rig.get(f"/machines/{MAC}/templates/preseed.cfg"))["error"]


def test_broken_template_is_500_json_and_listed_in_containers(tmp_path: Path) -> None:
    """A template naming an undefined variable is 500 {"error"} (nothing half-rendered) and
    shows in GET /containers errors until it renders again."""
    rig = make_rig(tmp_path)
    add_installer(rig, preseed="start\n{{ hostname }}\nend\n")
    rig.put(f"/machines/{MAC}", {"entry": "inst"})  # no hostname given
    code, answer, _ = rig.get(f"/machines/{MAC}/templates/preseed.cfg")
    assert code == 500 and "hostname" in json.loads(answer)["error"]
    assert b"start" not in answer
    errors = body(rig.get("/containers"))["errors"]
    assert [e["key"] for e in errors] == ["templates/preseed.cfg"]
    rig.put(f"/machines/{MAC}", {"entry": "inst", "hostname": "a"})
    assert rig.get(f"/machines/{MAC}/templates/preseed.cfg")[1] == b"start\na\nend\n"
    assert body(rig.get("/containers"))["errors"] == []


def test_boot_script_has_the_machines_kernel_line(tmp_path: Path) -> None:
    """The entry's cmdline is rendered per machine into its boot script (the operator's
    ${mac:hexhyp} kept for iPXE); two machines get two lines; explain shows it too."""
    rig = make_rig(tmp_path)
    add_installer(rig)
    other = "52:54:00:00:00:02"
    rig.put(f"/machines/{MAC}", {"entry": "inst", "hostname": "one"})
    rig.put(f"/machines/{other}", {"entry": "inst", "hostname": "two"})
    script = rig.get(f"/pxe/boot.ipxe?mac={MAC}")[1].decode()
    [kernel] = [line for line in script.splitlines() if line.startswith("kernel ")]
    assert kernel.endswith(f" initrd=initrd.gz auto=true url={BASE}/machines/{HYPHEN}/"
                           "templates/preseed.cfg hostname=one BOOTIF=01-${mac:hexhyp}")
    assert "hostname=two" in rig.get(f"/pxe/boot.ipxe?mac={other}")[1].decode()
    assert "hostname=one" in body(rig.get(f"/machines/{MAC}/explain"))["script"]
    menu_pick = rig.get(f"/containers/inst/boot.ipxe?mac={other}")[1].decode()
    assert "hostname=two" in menu_pick


def test_kernel_line_that_cannot_render_is_500_and_an_error(tmp_path: Path) -> None:
    """A machine whose vars would put `${` on the kernel line, or a cmdline naming an
    undefined variable: the boot script is 500 (iPXE retries, then boots local), an event
    says why, GET /containers lists it."""
    rig = make_rig(tmp_path)
    add_installer(rig, cmdline="role={{ vars.role }}")
    rig.put(f"/machines/{MAC}", {"entry": "inst", "vars": {"role": "${net0/ip}"}})
    code, script, _ = rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert code == 500 and b"kernel" not in script
    assert any(e["key"] == "cmdline" for e in body(rig.get("/containers"))["errors"])
    rig.clock.advance(1)
    assert any("cannot render" in e.detail for e in rig.events.recent(mac=MAC))
    rig.put(f"/machines/{MAC}", {"entry": "inst", "vars": {"role": "web"}})
    assert b"role=web" in rig.get(f"/pxe/boot.ipxe?mac={MAC}")[1]


@pytest.mark.parametrize(("field", "value"), [
    ("hostname", "bad_name"), ("hostname", "-a"), ("hostname", "a" * 64),
    ("hostname", "x.${net0/ip}"), ("hostname", "a b"), ("hostname", 5),
    ("vars", ["a"]), ("vars", {"a": 1}), ("vars", {"1a": "x"}), ("vars", {"a-b": "x"}),
    ("vars", {"a": "x\0"}),
])
def test_put_refuses_bad_hostname_and_vars(tmp_path: Path, field: str, value: Any) -> None:
    """hostname must be an RFC 1123 name; vars an object of strings with identifier
    names."""
    rig = make_rig(tmp_path)
    code, answer, _ = rig.put(f"/machines/{MAC}", {"entry": "lab", field: value})
    assert code == 400 and field in json.loads(answer)["error"]
    assert rig.machines.get(MAC) is None


def test_put_keeps_hostname_and_vars_when_not_given(tmp_path: Path) -> None:
    """A later PUT without hostname/vars keeps them; "" clears the hostname; an FQDN with a
    trailing dot is kept without it."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "hostname": "n1.example.", "vars": {"a": "$x"}})
    answer = body(rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True}))
    assert (answer["hostname"], answer["vars"]) == ("n1.example", {"a": "$x"})
    assert body(rig.put(f"/machines/{MAC}", {"entry": None, "hostname": ""}))["hostname"] == ""


def test_bulk_assignment(tmp_path: Path) -> None:
    """POST /machines with a list assigns every row (in one transaction); it survives a
    reopen of the store."""
    from pxetwist.store import Store

    rig = make_rig(tmp_path)
    rows = [{"mac": f"52-54-00-00-01-{n:02x}", "entry": "lab", "once": n % 2 == 0,
             "hostname": f"n{n}", "vars": {"rack": str(n)}} for n in range(20)]
    rows.append({"mac": "52:54:00:00:02:00", "entry": None})
    code, answer, _ = rig.post("/machines", rows)
    assert code == 200 and len(json.loads(answer)["machines"]) == 21
    assert rig.machines.get("52:54:00:00:01:02").state == "pending"  # type: ignore[union-attr]
    assert rig.machines.get("52:54:00:00:01:03").state == "assigned"  # type: ignore[union-attr]
    assert rig.machines.get("52:54:00:00:02:00").state == "local"  # type: ignore[union-attr]
    stored = {m.mac: m for m in Store(tmp_path / "state.sqlite").machines_now()}
    assert stored["52:54:00:00:01:13"].hostname == "n19"
    assert stored["52:54:00:00:01:13"].vars == (("rack", "19"),)


def test_bulk_assignment_is_all_or_nothing(tmp_path: Path) -> None:
    """One bad row refuses the whole list: 400 with every bad row's index, MAC and reason,
    and nothing is changed."""
    rig = make_rig(tmp_path)
    rows: list[Any] = [
        {"mac": "52:54:00:00:01:01", "entry": "lab"},
        {"mac": "zz", "entry": "lab"},
        {"mac": "52:54:00:00:01:01", "entry": "lab"},
        {"mac": "52:54:00:00:01:03", "entry": "nope"},
        {"mac": "52:54:00:00:01:04", "entry": "lab", "hostname": "a_b"},
        {"mac": "52:54:00:00:01:05", "entry": "lab", "colour": "red"},
        "not an object",
        {"entry": "lab"},
    ]
    code, answer, _ = rig.post("/machines", rows)
    refused = json.loads(answer)
    assert code == 400 and "nothing was changed" in refused["error"]
    assert [r["row"] for r in refused["rows"]] == [1, 2, 3, 4, 5, 6, 7]
    assert "twice" in refused["rows"][1]["error"] and refused["rows"][0]["mac"] == "zz"
    assert rig.machines.count() == 0
    for bad in (b"{}", b"[]", b"5", b"[" * 100_000):
        assert rig.post("/machines", bad)[0] == 400


def test_bulk_needs_the_admin_token(tmp_path: Path) -> None:
    """POST /machines is a mutation like PUT."""
    rig = make_rig(tmp_path, "[http]\napi_token = s3cret\n")
    assert rig.post("/machines", [{"mac": MAC, "entry": "lab"}])[0] == 401
    assert rig.post("/machines", [{"mac": MAC, "entry": "lab"}],
                    headers={"Authorization": "Bearer s3cret"})[0] == 200


class _From(Resource):
    """Serve ``inner`` as if every client came from ``host``."""

    isLeaf = True

    def __init__(self, inner: Any, host: str) -> None:
        super().__init__()
        self._inner = inner
        self._host = host

    def render(self, request: Any) -> Any:
        request.client = IPv4Address("TCP", self._host, 40000)
        return self._inner.render(request)


def test_callback_token_matrix_from_any_address(tmp_path: Path) -> None:
    """From a non-loopback address, with no admin token configured (mutations refused):
    the machine's own token works by GET and POST; another MAC's token, an older
    assignment's token and a made-up one are 403; a replay changes nothing and adds no
    event; afterwards the one-shot machine boots local."""
    from treq.testing import StubTreq

    rig = make_rig(tmp_path)
    add_installer(rig)
    other = "52:54:00:00:00:02"
    rig.put(f"/machines/{MAC}", {"entry": "inst", "once": True})
    old = urlsplit(body(rig.get(f"/machines/{MAC}"))["installed_url"]).query
    rig.put(f"/machines/{MAC}", {"entry": "inst", "once": True})
    rig.put(f"/machines/{other}", {"entry": "inst", "once": True})
    mine = urlsplit(body(rig.get(f"/machines/{MAC}"))["installed_url"])
    theirs = urlsplit(body(rig.get(f"/machines/{other}"))["installed_url"]).query
    rig.client = StubTreq(_From(rig.app.resource(), "10.77.0.50"))
    assert rig.put(f"/machines/{MAC}", {"entry": None})[0] == 403  # not loopback
    for query in (old, theirs, "token=" + "0" * 32, "token="):
        assert rig.get(f"/api/v1/machines/{MAC}/installed?{query}")[0] == 403, query
        assert rig.post(f"/api/v1/machines/{MAC}/installed?{query}")[0] == 403, query
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    code, answer, _ = rig.get(f"{mine.path}?{mine.query}")
    assert code == 200 and json.loads(answer)["state"] == "installed"
    rig.clock.advance(1)
    count = len(rig.events.recent(mac=MAC))
    assert rig.post(f"{mine.path}?{mine.query}")[0] == 200  # replay: harmless
    rig.clock.advance(1)
    assert len(rig.events.recent(mac=MAC)) == count
    assert rig.get(f"/pxe/boot.ipxe?mac={MAC}")[1].decode().rstrip().endswith("exit")
    details = [e.detail for e in rig.events.recent(mac=MAC) if e.stage == "lifecycle"]
    assert "installed (callback from 10.77.0.50)" in details


def test_callback_of_a_permanent_assignment_is_an_event(tmp_path: Path) -> None:
    """A permanent machine's callback is recorded as an event; it keeps booting its entry.
    The admin token keeps working for the callback."""
    rig = make_rig(tmp_path, "[http]\napi_token = s3cret\n")
    admin = {"Authorization": "Bearer s3cret"}
    rig.put(f"/machines/{MAC}", {"entry": "lab"}, headers=admin)
    code, answer, _ = rig.post(f"/api/v1/machines/{MAC}/installed", headers=admin)
    assert code == 200 and json.loads(answer)["state"] == "assigned"
    rig.clock.advance(1)
    details = [e.detail for e in rig.events.recent(mac=MAC) if e.stage == "lifecycle"]
    assert details[-1].startswith("installed reported (admin from 127.0.0.1); permanent")
    assert b"kernel " in rig.get(f"/pxe/boot.ipxe?mac={MAC}")[1]


def test_installing_when_the_image_is_fetched(tmp_path: Path) -> None:
    """A one-shot EFI entry: its script leaves the machine pending; fetching the image
    (with ?mac=) makes it installing, with an event."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "tool-efi", "once": True})
    rig.get(f"/pxe/boot.ipxe?mac={MAC}")
    assert rig.machines.get(MAC).state == "pending"  # type: ignore[union-attr]
    rig._do("HEAD", f"/containers/tool-efi?mac={HYPHEN}")
    assert rig.machines.get(MAC).state == "installing"  # type: ignore[union-attr]
    rig.clock.advance(1)
    assert "installing tool-efi (image)" in [e.detail for e in rig.events.recent(mac=MAC)]


def test_callback_token_comes_from_the_query_not_a_form_body(tmp_path: Path) -> None:
    """cloud-init's phone_home POSTs a form; a `token` field in it neither replaces the
    query's token nor is accepted alone."""
    rig = make_rig(tmp_path)
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True})
    url = urlsplit(body(rig.get(f"/machines/{MAC}"))["installed_url"])
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    code, _, _ = rig.post(f"{url.path}?{url.query}", b"instance_id=a&token=wrong",
                          headers=form)
    assert code == 200 and rig.machines.get(MAC).state == "installed"  # type: ignore[union-attr]
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": True})
    fresh = urlsplit(body(rig.get(f"/machines/{MAC}"))["installed_url"]).query
    rig.client = __import__("treq.testing", fromlist=["StubTreq"]).StubTreq(
        _From(rig.app.resource(), "10.77.0.50"))
    assert rig.post(url.path, fresh.encode(), headers=form)[0] == 403


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_accepted_hostname_is_a_plain_dns_name(text: str) -> None:
    """Whatever text is given as a hostname: refused, or a name of letters, digits, dots and
    hyphens only (nothing iPXE, a shell or Jinja would read)."""
    try:
        name = check_hostname(text)
    except BadRequestError:
        return
    assert re.fullmatch(r"[A-Za-z0-9.-]*", name) and len(name) <= 253


def test_bulk_takes_thousands_of_rows(tmp_path: Path) -> None:
    """A list of 5,000 rows with vars (~0.5 MB) is taken at once (beyond the 64 KiB of
    other bodies); more than 10,000 rows is 400."""
    rig = make_rig(tmp_path)
    rows = [{"mac": f"02:00:00:00:{n // 256:02x}:{n % 256:02x}", "entry": "lab",
             "hostname": f"node{n}", "vars": {"rack": f"r{n % 40}", "slot": str(n)}}
            for n in range(5000)]
    code, answer, _ = rig.post("/machines", rows)
    assert code == 200 and len(json.loads(answer)["machines"]) == 5000
    assert rig.machines.count() == 5000
    code, answer, _ = rig.post("/machines", [{"mac": MAC}] * 10_001)
    assert code == 400 and "10000" in json.loads(answer)["error"]

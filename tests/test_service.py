"""The plugin, the options and the service tree, assembled without binding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins

from pxetwist.config import Config, load_text
from pxetwist.dualstack import BACKLOG
from pxetwist.service import make_service
from pxetwist.tap import Options

REPO = Path(__file__).resolve().parent.parent


def lab_config(tmp_path: Path, extra: str = "") -> Config:
    """A config for tests: everything under tmp_path, high/ephemeral ports, DHCP off."""
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(exist_ok=True)
    text = (
        "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n"
        "[dhcp]\nmode = off\n[tftp]\nenabled = no\nport = 0\nroot = tftproot\n"
        "[http]\nport = 0\ninterface = 127.0.0.1\n[catalog]\npaths = catalog\n" + extra
    )
    return load_text(text, tmp_path, "test.ini")


def test_plugin_is_discovered() -> None:
    """twistd finds the 'pxeboot' plugin through Twisted's plugin scan."""
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "pxeboot" in makers
    assert makers["pxeboot"].options is Options


def test_plugin_folder_has_no_init() -> None:
    """twisted/plugins/ must not be a package of ours (it would hide Twisted's plugins)."""
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()


def test_options_load_config_and_overrides() -> None:
    """--config loads the file and --set overrides a key, validated."""
    options = Options()
    options.parseOptions(["--config", str(REPO / "etc" / "pxe.ini"), "--set", "http.port=9999"])
    assert options.config is not None and options.config.http.port == 9999


def test_bad_config_exits_with_one_line(tmp_path: Path) -> None:
    """A bad value ends option parsing with SystemExit naming section and key."""
    shutil.copy(REPO / "etc" / "pxe.ini", tmp_path / "pxe.ini")
    (tmp_path / "pxe.ini").write_text(
        (tmp_path / "pxe.ini").read_text().replace("range_start =", "range_start = 10.0.0.300")
    )
    with pytest.raises(SystemExit) as info:
        Options().parseOptions(["--config", str(tmp_path / "pxe.ini")])
    assert str(info.value).count("\n") == 0
    assert "[dhcp] range_start: '10.0.0.300' is not an IPv4 address" in str(info.value)


def test_service_tree_assembles_without_binding(tmp_path: Path) -> None:
    """make_service builds named children and binds nothing until started."""
    reactor = MemoryReactorClock()
    top = make_service(lab_config(tmp_path), reactor)
    assert IService.providedBy(top)
    names = {service.name for service in top}
    assert {"store", "events", "catalog", "http", "status"} <= names
    assert reactor.tcpServers == []
    assert top.base_url == "http://127.0.0.1:0"


def test_service_tree_binds_http_when_started(tmp_path: Path) -> None:
    """Starting the tree listens on [http] port/interface through the given reactor."""
    reactor = MemoryReactorClock()
    top = make_service(lab_config(tmp_path), reactor)
    top.privilegedStartService()
    top.startService()
    try:
        assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
            (0, "127.0.0.1")
        ]
    finally:
        top.stopService()


@pytest.mark.parametrize("interface", ["127.0.0.1", ""])
def test_http_listens_with_a_deep_accept_queue(tmp_path: Path, interface: str) -> None:
    """The HTTP port queues BACKLOG connections, not Twisted's 50: a fleet powering on
    at once must not have its handshakes dropped (one interface, or both families)."""
    reactor = MemoryReactorClock()
    config = lab_config(tmp_path).http
    top = make_service(evolve(lab_config(tmp_path), http=evolve(config, interface=interface)),
                       reactor)
    top.privilegedStartService()
    try:
        assert [backlog for _, _, backlog, _ in reactor.tcpServers][:1] == [BACKLOG]
    finally:
        top.stopService()


@pytest_twisted.ensureDeferred
async def test_health_on_loopback(tmp_path: Path, reactor: object) -> None:
    """The real service on 127.0.0.1 answers GET /health with what runs."""
    import treq

    top = make_service(lab_config(tmp_path), reactor)
    top.privilegedStartService()
    top.startService()
    try:
        http = top.getServiceNamed("http")
        port = http._waitingForPort.result.getHost().port  # type: ignore[attr-defined]
        response = await treq.get(f"http://127.0.0.1:{port}/health")
        body = json.loads(await response.text())
        assert response.code == 200
        assert body["status"] == "ok" and "http" in body["services"]
    finally:
        await top.stopService()


def test_port_chatter_filter_drops_only_session_port_lines() -> None:
    """The twistd log filter drops per-transfer port lines and keeps everything else."""
    from twisted.logger import PredicateResult

    from pxetwist.tap import _PortChatterFilter

    chatter = _PortChatterFilter()
    assert chatter({"log_text": "TftpSession starting on 50123"}) is PredicateResult.no
    assert chatter({"log_text": "StrangerProtocol starting on 50123"}) is PredicateResult.no
    assert chatter({"message": ("(UDP Port 50123 Closed)",)}) is PredicateResult.no
    assert chatter({"log_text": "TftpServerProtocol starting on 69"}) is PredicateResult.maybe
    assert chatter({"log_format": "TFTP {file} to {client}"}) is PredicateResult.maybe


@settings(max_examples=300)
@given(when=st.one_of(st.none(), st.floats(min_value=0, max_value=4e9)),
       system=st.one_of(st.none(), st.text(max_size=20)),
       text=st.text(max_size=40))
def test_log_line_is_twisteds_text_observers_line(when: float | None, system: str | None,
                                                  text: str) -> None:
    """The twistd log writes each event exactly as Twisted's textFileLogObserver would,
    its timestamp made once a second included."""
    from twisted.logger import LogLevel, formatEventAsClassicLogText, formatTime

    from pxetwist.tap import classic_log_text

    event: dict[str, Any] = {"log_format": "{text} and {n}", "text": text, "n": 7,
                             "log_level": LogLevel.info, "log_namespace": "pxetwist.x"}
    if when is not None:
        event["log_time"] = when
    if system is not None:
        event["log_system"] = system
    expected = formatEventAsClassicLogText(event, formatTime=formatTime)
    assert classic_log_text(event) == expected
    assert classic_log_text(event) == expected  # from the per-second cache


def test_full_tree_has_every_named_child(tmp_path: Path) -> None:
    """With DHCP and TFTP on, the tree holds store, events, catalog, dhcp, tftp and http,
    built without binding anything, and explain is wired to the DHCP boot policy."""
    config = lab_config(tmp_path, "")
    from attrs import evolve

    config = evolve(config, dhcp=evolve(config.dhcp, mode="proxy"),
                    tftp=evolve(config.tftp, enabled=True))
    reactor = MemoryReactorClock()
    top = make_service(config, reactor)
    names = {service.name for service in top}
    assert {"store", "events", "catalog", "dhcp", "tftp", "http"} <= names
    assert getattr(reactor, "udpPorts", {}) == {} and reactor.tcpServers == []
    rows = top.getServiceNamed("dhcp").policy.explain("52:54:00:00:00:01")
    assert rows[0] == {"arch": "bios", "code": 0, "how": "tftp", "file": "undionly.kpxe",
                       "reason": "[boot.files] bios"}


def test_tftp_serves_generated_scripts_after_its_folders(tmp_path: Path) -> None:
    """TFTP's last fallback: boot.ipxe chains to HTTP with the MAC, menu.ipxe is the menu;
    a file of that name in the TFTP root wins; other names are not generated."""
    from pxetwist.catalog import CatalogService
    from pxetwist.chain import chain_files
    from pxetwist.events import EventBus
    from pxetwist.machines import MachineRegistry
    from pxetwist.store import Store
    from pxetwist.tftp.files import FileRefusedError, FileResolver

    config = lab_config(tmp_path, "[boot]\nmenu_timeout = 7\n")
    (tmp_path / "catalog" / "hello.ipxe").write_text("#!ipxe\necho hi\n")
    store = Store(tmp_path / "s.sqlite")
    catalog = CatalogService(config.catalog, store, MemoryReactorClock())
    catalog.load()
    base = "http://10.77.0.1:8080"
    machines = MachineRegistry(store, EventBus(MemoryReactorClock()), MemoryReactorClock())
    resolver = FileResolver((config.tftp.root,), chain_files(config, catalog, machines, base)[0])

    def read(name: str) -> str:
        source = resolver.open(name)
        try:
            return source.read(0, source.size).decode()
        finally:
            source.close()

    assert f"chain --autofree {base}/pxe/boot.ipxe?mac=${{mac:hexhyp}}" in read("/boot.ipxe")
    menu = read("menu.ipxe")
    assert "item e-hello" in menu and "--timeout 7000" in menu
    (tmp_path / "tftproot" / "boot.ipxe").write_text("#!ipxe\necho site script\n")
    assert read("boot.ipxe") == "#!ipxe\necho site script\n"
    with pytest.raises(FileRefusedError):
        resolver.open("other.ipxe")


@pytest.mark.parametrize("verbose", [False, True])
def test_dhcp_packet_dumps_only_with_verbose(tmp_path: Path, verbose: bool) -> None:
    """``twistd pxeboot`` gives the DHCP ports a debug event per datagram only with
    --verbose (below debug they cost time and are dropped)."""
    from pxetwist.tap import makeService

    lab_config(tmp_path)  # the folders
    (tmp_path / "pxe.ini").write_text(
        "[server]\naddress = 127.0.0.1\nstate = state.sqlite\n[dhcp]\nmode = proxy\n"
        "[tftp]\nenabled = no\nport = 0\nroot = tftproot\n[http]\nport = 0\n"
        "interface = 127.0.0.1\n[catalog]\npaths = catalog\n")
    options = Options()
    options.parseOptions(["--config", str(tmp_path / "pxe.ini")]
                         + (["--verbose"] if verbose else []))
    dhcp = makeService(options).getServiceNamed("dhcp")  # type: ignore[attr-defined]
    assert dhcp.main.packet_dumps is verbose and dhcp.boot_server.packet_dumps is verbose

"""A PxeApp over a temp catalog and store, and a StubTreq client for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import define
from treq.testing import StubTreq
from twisted.internet.task import Clock

from pxetwist.catalog import CatalogService
from pxetwist.config import load_text
from pxetwist.events import EventBus
from pxetwist.http.app import PxeApp
from pxetwist.machines import MachineRegistry
from pxetwist.store import Store

BASE = "http://10.77.0.1:8080"
MAC = "52:54:00:12:34:56"


def make_catalog(root: Path) -> None:
    lab = root / "lab"
    lab.mkdir(parents=True)
    (lab / "entry.ini").write_text(
        "[entry]\nname = Lab payload\nkind = linux\nkernel = vmlinuz\ninitrd = initrd.img\n"
        "cmdline = console=ttyS0 token=abc\n")
    (lab / "vmlinuz").write_bytes(bytes(range(256)) * 64)
    (lab / "initrd.img").write_bytes(b"initrd" * 100)
    (root / "tool.efi").write_bytes(b"MZ" + b"\0" * 50)
    (root / "rescue.iso").write_bytes(b"\0" * 4096)
    (root / "hello.ipxe").write_text("#!ipxe\necho hello\n")


@define
class Rig:
    app: PxeApp
    client: StubTreq
    clock: Clock
    events: EventBus
    machines: MachineRegistry
    catalog: CatalogService
    tmp: Path

    def get(self, path: str, **kw: Any) -> tuple[int, bytes, Any]:
        return self._do("GET", path, **kw)

    def _do(self, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        from twisted.trial.unittest import SynchronousTestCase

        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) \
            else body
        d = self.client.request(method, BASE + path, data=data,
                                headers={k: [v] for k, v in (headers or {}).items()})
        case = SynchronousTestCase()
        self.client.flush()
        response = case.successResultOf(d)
        content_d = response.content()
        self.client.flush()
        content = case.successResultOf(content_d)
        return response.code, content, response

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, bytes, Any]:
        return self._do("POST", path, body=body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, bytes, Any]:
        return self._do("PUT", path, body=body, **kw)


def make_rig(tmp_path: Path, extra: str = "") -> Rig:
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir(exist_ok=True)
    make_catalog(tmp_path / "catalog")
    config = load_text(
        "[server]\naddress = 10.77.0.1\n[tftp]\nroot = tftproot\n[catalog]\npaths = catalog\n"
        "rescan_interval = 0\n" + extra, tmp_path)
    clock = Clock()
    store = Store(tmp_path / "state.sqlite")
    events = EventBus(clock)
    machines = MachineRegistry(store, events, clock, config.boot.max_machines)
    machines.start()
    catalog = CatalogService(config.catalog, store, clock)
    catalog.load()
    app = PxeApp(config, catalog, machines, store, events, BASE, ("http",))
    return Rig(app, StubTreq(app.resource()), clock, events, machines, catalog, tmp_path)

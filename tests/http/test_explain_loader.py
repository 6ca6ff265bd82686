"""GET /machines/{mac}/explain over the assembled service: the DHCP rows per architecture."""

from __future__ import annotations

import json
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactorClock

from pxetwist.config import load_text
from pxetwist.service import make_service


def test_explain_says_no_loader_for_arm32(tmp_path: Path) -> None:
    """Issue 13 item 12: explain shows UEFI arm32 with no file and "no loader for this
    architecture", and x64 UEFI with ipxe.efi."""
    for name in ("tftproot", "catalog"):
        (tmp_path / name).mkdir()
    config = load_text("[server]\naddress = 127.0.0.1\nstate = s.sqlite\n[tftp]\nenabled = no\n"
                       "root = tftproot\n[http]\nport = 0\n[catalog]\npaths = catalog\n",
                       tmp_path)
    top = make_service(config, MemoryReactorClock())
    client = StubTreq(top.getServiceNamed("http").factory.resource)
    results: list[bytes] = []
    client.get("http://127.0.0.1/machines/52:54:00:00:0a:01/explain").addCallback(
        lambda response: response.content()).addCallback(results.append)
    client.flush()
    rows = {row["code"]: row for row in json.loads(results[0])["dhcp"]}
    assert rows[10]["how"] == "none" and rows[10]["file"] == ""
    assert rows[10]["reason"].startswith("no loader for this architecture")
    assert rows[7]["file"] == "ipxe.efi"
    top.getServiceNamed("store").store.close()

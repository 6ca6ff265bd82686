"""Boot files and mirror entries over real sockets on 127.0.0.1, with curl: a ``.gz`` is
sent as its bytes (curl ``--compressed`` keeps them), nested ``/files`` paths, and an
entry whose file is on a mirror (an in-process HTTP server) boots from that mirror."""

from __future__ import annotations

import functools
import gzip
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.http.helpers import make_catalog
from tests.loopback_server import running_pxeboot

pytestmark = pytest.mark.integration
MIRROR_SCRIPT = b"#!ipxe\necho from the mirror\n"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    folder = tmp_path_factory.mktemp("bootfiles")
    (folder / "mirror").mkdir()
    (folder / "mirror" / "boot.ipxe").write_bytes(MIRROR_SCRIPT)
    mirror = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
        _QuietHandler, directory=str(folder / "mirror")))
    thread = threading.Thread(target=mirror.serve_forever, daemon=True)
    thread.start()
    mirror_url = f"http://127.0.0.1:{mirror.server_address[1]}"
    make_catalog(folder / "catalog")
    (folder / "catalog" / "net").mkdir()
    (folder / "catalog" / "net" / "entry.ini").write_text(
        f"[entry]\nkind = ipxe\nfile = {mirror_url}/boot.ipxe\n")
    (folder / "tftproot" / "sub").mkdir(parents=True)
    (folder / "tftproot" / "sub" / "nested.txt").write_bytes(b"nested file")
    (folder / "tftproot" / "initrd.gz").write_bytes(gzip.compress(b"initrd " * 1000))
    try:
        with running_pxeboot(folder) as base:
            yield base, mirror_url, folder
    finally:
        mirror.shutdown()
        mirror.server_close()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          timeout=30)


def test_gz_arrives_as_its_bytes_with_curl_compressed(lab: tuple[str, str, Path]) -> None:
    """curl --compressed gets initrd.gz byte for byte: no Content-Encoding is sent."""
    base, _, folder = lab
    result = curl("--compressed", "-D", "-", f"{base}/files/initrd.gz")
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-encoding" not in head.lower()
    assert body == (folder / "tftproot" / "initrd.gz").read_bytes()


def test_nested_path_over_the_wire(lab: tuple[str, str, Path]) -> None:
    """/files/sub/nested.txt is the file; a traversal next to it is still refused."""
    base, _, _ = lab
    assert curl("-f", f"{base}/files/sub/nested.txt").stdout == b"nested file"
    result = curl("-o", "/dev/null", "-w", "%{http_code}", "--path-as-is",
                  f"{base}/files/sub/../../catalog/lab/entry.ini")
    assert result.stdout.startswith(b"4")


def test_url_entry_boots_from_the_mirror(lab: tuple[str, str, Path]) -> None:
    """The entry's script chains to the mirror URL, which answers; /containers/net
    redirects there (curl -L gets the mirror's script)."""
    base, mirror_url, _ = lab
    script = curl("-f", f"{base}/containers/net/boot.ipxe").stdout.decode()
    [chain] = [line for line in script.splitlines() if line.startswith("chain ")]
    url = chain.split()[1]
    assert url == f"{mirror_url}/boot.ipxe"
    assert curl("-f", url).stdout == MIRROR_SCRIPT
    assert curl("-fL", f"{base}/containers/net").stdout == MIRROR_SCRIPT

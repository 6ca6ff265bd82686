"""The real HTTP service on 127.0.0.1, with curl: Range, multi-range, If-Range, HEAD,
path escapes, and boot events of file fetches."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.helpers import make_catalog
from tests.loopback_server import running_pxeboot

MAC = "52:54:00:ab:cd:ef"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    folder = tmp_path_factory.mktemp("http")
    make_catalog(folder / "catalog")
    (folder / "tftproot").mkdir()
    (folder / "tftproot" / "boot.cfg").write_bytes(b"tftp root file")
    (folder / "secret").write_bytes(b"secret")
    (folder / "tftproot" / "link").symlink_to(folder / "secret")
    with running_pxeboot(folder) as base:
        yield base, folder


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          timeout=30)


def test_range_is_206_with_the_bytes(server: tuple[str, Path]) -> None:
    """A single range is 206 with Content-Range and exactly those bytes."""
    base, folder = server
    result = curl("-D", "-", "-r", "10-19", f"{base}/containers/lab/files/vmlinuz")
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206")
    assert b"Content-Range: bytes 10-19/16384" in head
    assert body == (folder / "catalog" / "lab" / "vmlinuz").read_bytes()[10:20]


def test_multi_range_is_multipart(server: tuple[str, Path]) -> None:
    """Two ranges: 206 multipart/byteranges holding both parts."""
    base, folder = server
    result = curl("-D", "-", "-r", "0-3,100-103", f"{base}/containers/lab/files/vmlinuz")
    content = (folder / "catalog" / "lab" / "vmlinuz").read_bytes()
    assert b"206" in result.stdout.split(b"\r\n")[0]
    assert b"multipart/byteranges" in result.stdout
    assert content[0:4] in result.stdout and content[100:104] in result.stdout


def test_if_range_with_old_date_sends_whole_file(server: tuple[str, Path]) -> None:
    """If-Range with a date before the file's: the whole file, 200."""
    base, folder = server
    result = curl("-D", "-", "-r", "0-3", "-H", "If-Range: Thu, 01 Jan 1970 00:00:00 GMT",
                  f"{base}/containers/lab/files/vmlinuz")
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == 16384


def test_head_has_length_and_no_body(server: tuple[str, Path]) -> None:
    """HEAD answers the size and ranges support without the body."""
    base, _ = server
    result = curl("-I", f"{base}/containers/lab/files/vmlinuz")
    assert b"Content-Length: 16384" in result.stdout and b"Accept-Ranges: bytes" in result.stdout


def test_entry_main_file_and_fallback_files(server: tuple[str, Path]) -> None:
    """/containers/{id} serves the entry's file; /files/ serves the TFTP root."""
    base, _ = server
    assert curl(f"{base}/containers/tool-efi").stdout.startswith(b"MZ")
    assert curl(f"{base}/files/boot.cfg").stdout == b"tftp root file"


@pytest.mark.parametrize(
    "path",
    ["/files/../secret", "/files/..%2fsecret", "/files/%2e%2e/%2e%2e/etc/passwd", "/files/link",
     "/files/", "/containers/lab/files/..%2f..%2fsecret", "/containers/lab/files/%2fetc%2fpasswd",
     "/files/..%5c..%5csecret", "/containers/../../secret", "/files/%00secret"],
)
def test_path_escapes_are_refused(server: tuple[str, Path], path: str) -> None:
    """Traversal, encoded traversal, symlinks out, NUL, listings: never the secret."""
    base, _ = server
    result = curl("--path-as-is", "-o", "-", "-w", "\n%{http_code}", base + path)
    body, _, code = result.stdout.rpartition(b"\n")
    assert body.strip() != b"secret"
    assert code.startswith((b"4",)), (path, code)


def test_file_fetches_are_events_for_the_mac(server: tuple[str, Path]) -> None:
    """Kernel and initrd fetches with ?mac= show as http.kernel and http.initrd events."""
    base, _ = server
    curl("-o", "/dev/null", f"{base}/containers/lab/files/vmlinuz?mac={MAC.replace(':', '-')}")
    curl("-o", "/dev/null", f"{base}/containers/lab/files/initrd.img?mac={MAC}")
    with urllib.request.urlopen(f"{base}/events?mac={MAC}", timeout=5) as response:
        stages = [e["stage"] for e in json.loads(response.read())["events"]]
    assert stages == ["http.kernel", "http.initrd"]


def test_server_sent_events_stream(server: tuple[str, Path]) -> None:
    """With Accept: text/event-stream, a new event arrives as an SSE message."""
    base, _ = server
    stream = subprocess.Popen(["curl", "-sN", "--max-time", "5", "-H",
                               "Accept: text/event-stream", f"{base}/events"],
                              stdout=subprocess.PIPE)
    try:
        time.sleep(1)
        curl("-o", "/dev/null", f"{base}/pxe/boot.ipxe?mac=52-54-00-00-00-77")
        out, _ = stream.communicate(timeout=10)
    finally:
        if stream.poll() is None:
            stream.kill()
    assert b"data: " in out and b'"mac": "52:54:00:00:00:77"' in out


def test_if_range_with_current_date_keeps_the_range(server: tuple[str, Path]) -> None:
    """If-Range with a date at or after the file's: the range still applies, 206."""
    base, _ = server
    result = curl("-D", "-", "-r", "0-3", "-H", "If-Range: Fri, 01 Jan 2100 00:00:00 GMT",
                  f"{base}/containers/lab/files/vmlinuz")
    assert result.stdout.startswith(b"HTTP/1.1 206")
    result = curl("-D", "-", "-r", "0-3", "-H", 'If-Range: "some-etag"',
                  f"{base}/containers/lab/files/vmlinuz")
    assert result.stdout.startswith(b"HTTP/1.1 200")


def test_file_of_several_chunks_is_whole_and_ranges_cross_chunks(server: tuple[str, Path]
                                                                 ) -> None:
    """A file of several read chunks comes whole; a range across a chunk edge is exact."""
    base, folder = server
    data = bytes(range(256)) * (3 * 1024 * 5 + 7)  # ~3.75 MiB, not a multiple of a chunk
    (folder / "tftproot" / "big.bin").write_bytes(data)
    assert curl(f"{base}/files/big.bin").stdout == data
    edge = 256 * 1024
    assert curl("-r", f"{edge - 5}-{edge + 4}", f"{base}/files/big.bin").stdout == \
        data[edge - 5:edge + 5]


def test_boot_script_has_a_content_length(server: tuple[str, Path]) -> None:
    """The boot script (served before Klein's routing) is sent with its Content-Length."""
    base, _ = server
    result = curl("-D", "-", f"{base}/pxe/boot.ipxe?mac={MAC}")
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body.startswith(b"#!ipxe")
    assert f"content-length: {len(body)}".encode() in head.lower()


def _answer(*args: str) -> tuple[bytes, dict[str, str], bytes]:
    """Status line, the headers that describe the body, and the body of one curl call."""
    result = curl(*args) if "-I" in args else curl("-D", "-", *args)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.decode().lower().split(": ", 1) for line in lines[1:])
    kept = {k: v for k, v in headers.items()
            if k in ("content-type", "content-length", "content-range", "accept-ranges",
                     "last-modified", "cache-control")}
    return lines[0], kept, body


@pytest.mark.parametrize(("plain", "escaped", "extra"), [
    ("/containers/lab/files/vmlinuz", "/containers/l%61b/files/vmlinu%7a", ()),
    ("/containers/lab/files/initrd.img", "/containers/lab/files/initrd%2eimg", ("-I",)),
    ("/containers/lab/files/vmlinuz", "/containers/%6cab/files/vmlinuz", ("-r", "5-9")),
    ("/containers/lab/files/missing", "/containers/lab/files/missin%67", ()),
    ("/containers/gone/files/vmlinuz", "/containers/gon%65/files/vmlinuz", ()),
    (f"/containers/lab/boot.ipxe?mac={MAC}", f"/containers/%6cab/boot.ipxe?mac={MAC}", ()),
    ("/containers/gone/boot.ipxe", "/containers/gon%65/boot.ipxe", ()),
])
def test_boot_paths_answer_as_klein_does(server: tuple[str, Path], plain: str, escaped: str,
                                         extra: tuple[str, ...]) -> None:
    """The requests every machine makes skip Klein (`_BootFastPath`); a `%` escape sends
    the same request through Klein's routing: both answers are the same (but for the
    Content-Length the fast path gives a script or error that Klein sends chunked), and
    both are counted under the route's pattern."""
    base, _ = server
    pattern = "/containers/<entry_id>/files/<name>" if "/files/" in plain else \
        "/containers/<entry_id>/boot.ipxe"
    counted = _requests_counted(base, pattern)
    fast = _answer(*extra, f"{base}{plain}")
    routed = _answer(*extra, f"{base}{escaped}")
    deadline = time.monotonic() + 10  # a sent file is counted once its thread reports
    while _requests_counted(base, pattern) < counted + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _requests_counted(base, pattern) == counted + 2
    assert fast[0] == routed[0] and fast[2] == routed[2]
    if "content-length" not in routed[1] and "-I" not in extra:
        assert fast[1].pop("content-length") == str(len(fast[2]))
    assert fast[1] == routed[1]
    assert fast[0].split()[1] in (b"200", b"206", b"404")


def _requests_counted(base: str, route: str) -> float:
    """``pxetwist_http_requests_total`` of ``route``, all statuses."""
    total = 0.0
    for line in curl(f"{base}/metrics").stdout.decode().splitlines():
        if line.startswith("pxetwist_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total

"""atheris target: the TFTP codec, option negotiation and the file-name resolver.

Any datagram must either parse or raise TftpPacketError; a parsed request must
re-encode to itself, negotiate options without raising, and its file name must
resolve or be refused with FileRefusedError (never anything outside the root).
Run: ``python fuzz/fuzz_tftp_packet.py -atheris_runs=1000000 fuzz/corpus/tftp``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pxetwist.config import load_text
    from pxetwist.tftp import packet
    from pxetwist.tftp.files import FileRefusedError, FileResolver
    from pxetwist.tftp.server import negotiate

_FOLDER = Path(tempfile.mkdtemp(prefix="pxetwist-fuzz-tftp-"))
_ROOT = _FOLDER / "root"
(_ROOT / "sub").mkdir(parents=True)
(_ROOT / "undionly.kpxe").write_bytes(b"k" * 1000)
(_ROOT / "sub" / "a.txt").write_bytes(b"a\nb\r\n")
(_FOLDER / "secret").write_bytes(b"outside")
os.symlink(_FOLDER / "secret", _ROOT / "out")
os.symlink("sub/a.txt", _ROOT / "in")
(_FOLDER / "catalog").mkdir()
_CONFIG = load_text("[tftp]\nroot = root\nmax_blksize = 1468\n[catalog]\npaths = catalog\n",
                    _FOLDER).tftp
_RESOLVER = FileResolver((_ROOT,))
_REAL_ROOT = os.path.realpath(_ROOT)


def test_one_input(data: bytes) -> None:
    try:
        parsed = packet.parse(data)
    except packet.TftpPacketError:
        return
    if not isinstance(parsed, packet.Request):
        return
    again = packet.encode_request(parsed.opcode, parsed.filename, parsed.mode, parsed.options)
    if packet.parse(again) != parsed:
        raise AssertionError(f"round trip changed {parsed!r}")
    blksize, windowsize, _max_rto, oack = negotiate(parsed.options, 1000, _CONFIG)
    if not (8 <= blksize <= 1468 and 1 <= windowsize <= _CONFIG.max_windowsize):
        raise AssertionError(f"negotiated out of range: {blksize} {windowsize}")
    packet.encode_oack(oack)
    try:
        source = _RESOLVER.open(parsed.filename, parsed.mode == "netascii")
    except FileRefusedError:
        return
    source.close()
    if source.name not in ("undionly.kpxe", "sub/a.txt", "in"):
        raise AssertionError(f"{parsed.filename!r} resolved to {source.name!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

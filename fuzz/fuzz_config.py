"""atheris target: the ini config loader.

Any text must either load or raise ConfigError with a one-line message; any
other exception is a finding. Run: ``python fuzz/fuzz_config.py -runs=1000000``
(see fuzz/README.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pxetwist.config import ConfigError, load_text

_FOLDER = Path(tempfile.mkdtemp(prefix="pxetwist-fuzz-config-"))
for _name in ("tftproot", "catalog", "etc"):
    (_FOLDER / _name).mkdir(exist_ok=True)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        load_text(text, _FOLDER / "etc", "fuzz.ini")
    except ConfigError as e:
        if "\n" in str(e):
            raise AssertionError(f"multi-line config error: {e!r}") from None


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()

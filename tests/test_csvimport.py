"""`pxetwist import FILE.csv`: CSV rows to one all-or-nothing POST /machines, and the row
errors told by file line."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.csvimport import read_rows
from tests.http.helpers import make_rig
from tests.test_cli import cli


def test_rows_are_read() -> None:
    """Header, comments and blank lines skipped; empty entry is local boot; vars from
    key=value cells (a value may hold '=' and commas in quotes)."""
    read = read_rows("mac,hostname,entry,once\n# a comment\n\n"
                     "52:54:00:00:00:01,web1,lab,yes,role=web,\"opts=a=1,b\"\n"
                     "52-54-00-00-00-02,,,\n")
    assert read.errors == ()
    assert read.lines == (4, 5)
    assert read.records == (
        {"mac": "52:54:00:00:00:01", "entry": "lab", "once": True, "hostname": "web1",
         "vars": {"role": "web", "opts": "a=1,b"}},
        {"mac": "52-54-00-00-00-02", "entry": None, "once": False})


def test_line_errors() -> None:
    """A bad once, a cell without '=', a variable given twice: errors by line."""
    read = read_rows("a,h,lab,maybe\nb,h,lab,no,novalue\nc,h,lab,no,x=1,x=2\n")
    assert [line for line, _ in read.errors] == [1, 2, 3]
    assert read.records == ()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_garbage_never_raises(text: str) -> None:
    """Any text: rows and errors, never an exception."""
    read = read_rows(text)
    assert len(read.records) == len(read.lines)


def test_import_command(tmp_path: Path) -> None:
    """The command imports every row at once; a bad row (server-side: a bad hostname, an
    unknown entry) refuses the file, naming file lines; nothing changed."""
    rig = make_rig(tmp_path)
    good = tmp_path / "fleet.csv"
    good.write_text("mac,hostname,entry,once\n52:54:00:00:00:01,web1,lab,yes,role=web\n"
                    "52:54:00:00:00:02,web2,lab,no\n")
    code, out, err = cli(rig, "import", str(good))
    assert code == 0 and out.startswith("imported 2 machines"), err
    assert rig.machines.get("52:54:00:00:00:01").vars == (("role", "web"),)  # type: ignore[union-attr]
    bad = tmp_path / "bad.csv"
    bad.write_text("52:54:00:00:00:03,ok,lab,no\n52:54:00:00:00:04,bad_name,lab,no\n"
                   "52:54:00:00:00:05,x,nope,no\n")
    code, _, err = cli(rig, "import", str(bad))
    assert code == 1 and "nothing was changed" in err
    assert f"{bad}:2: hostname" in err and f"{bad}:3: no entry 'nope'" in err
    assert rig.machines.get("52:54:00:00:00:03") is None
    local = tmp_path / "local.csv"
    local.write_text("52:54:00:00:00:06,h,lab,sometimes\n")
    code, _, err = cli(rig, "import", str(local))
    assert code == 1 and f"{local}:1: once must be yes or no" in err
    assert cli(rig, "import", str(tmp_path / "missing.csv"))[0] == 1

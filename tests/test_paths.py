"""`ResolvedNames` (remembered `resolve_inside`) gives what a fresh resolution gives, after
whatever happens to the files, links and folders between two questions."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxetwist.paths import PathRefusedError, ResolvedNames, resolve_inside


def fresh(folder: Path, name: str) -> str | type[PathRefusedError] | None:
    try:
        return resolve_inside(folder, name)
    except PathRefusedError:
        return PathRefusedError


def remembered(names: ResolvedNames, folder: Path,
               name: str) -> str | type[PathRefusedError] | None:
    try:
        return names.resolve(folder, name)
    except PathRefusedError:
        return PathRefusedError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "served" / "sub").mkdir(parents=True)
    (tmp_path / "served" / "sub" / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "vmlinuz").write_bytes(b"secret")
    return tmp_path


def _file_to_link_out(tree: Path) -> None:
    (tree / "served" / "sub" / "vmlinuz").unlink()
    (tree / "served" / "sub" / "vmlinuz").symlink_to(tree / "outside" / "vmlinuz")


def _folder_to_link_out(tree: Path) -> None:
    shutil.rmtree(tree / "served" / "sub")
    (tree / "served" / "sub").symlink_to(tree / "outside")


@pytest.mark.parametrize("replace", [_file_to_link_out, _folder_to_link_out])
def test_a_file_or_folder_replaced_by_a_link_out_is_refused(tree: Path, replace: Any) -> None:
    names = ResolvedNames()
    served = tree / "served"
    assert names.resolve(served, "sub/vmlinuz") == str(served / "sub" / "vmlinuz")
    replace(tree)
    with pytest.raises(PathRefusedError):
        names.resolve(served, "sub/vmlinuz")


def test_a_removed_file_is_none_and_a_new_one_is_found(tree: Path) -> None:
    names = ResolvedNames()
    served = tree / "served"
    names.resolve(served, "sub/vmlinuz")
    (served / "sub" / "vmlinuz").unlink()
    assert names.resolve(served, "sub/vmlinuz") is None
    (served / "sub" / "vmlinuz").write_bytes(b"new kernel")
    assert names.resolve(served, "sub/vmlinuz") == str(served / "sub" / "vmlinuz")


def test_past_the_limit_everything_is_forgotten(tree: Path) -> None:
    names = ResolvedNames(limit=3)
    served = tree / "served"
    for i in range(3):
        (served / f"f{i}").write_bytes(b"x")
        names.resolve(served, f"f{i}")
    assert len(names._known) == 3
    (served / "f3").write_bytes(b"x")
    names.resolve(served, "f3")
    assert len(names._known) == 1


NAMES = ("a", "b", "d/a", "d/b", "l")
#: (what, which name): change the tree between two questions
CHANGES = st.lists(st.tuples(
    st.sampled_from(("file", "remove", "link_in", "link_out", "folder_out", "folder_back",
                     "ask")),
    st.sampled_from(NAMES)), max_size=25)


@settings(max_examples=150, deadline=None)
@given(CHANGES)
def test_remembered_answers_are_fresh_answers(changes: list[tuple[str, str]]) -> None:
    """Whatever sequence of files, links and folders replaced, removed or moved in and
    out, every question gets the answer a fresh `resolve_inside` gives."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        served, outside = root / "served", root / "outside"
        (served / "d").mkdir(parents=True)
        (outside / "d").mkdir(parents=True)
        for name in NAMES:
            (outside / name).write_bytes(b"outside")
        names = ResolvedNames()
        for what, name in changes:
            path = served / name
            if what == "ask":
                for asked in NAMES:
                    assert remembered(names, served, asked) == fresh(served, asked)
                continue
            if what == "folder_out":
                _clear(served / "d")
                (served / "d").symlink_to(outside / "d")
                continue
            if what == "folder_back":
                _clear(served / "d")
                (served / "d").mkdir()
                continue
            if path.parent.is_symlink():
                continue  # the folder is outside now: leave its files alone
            _clear(path)
            if what == "file":
                path.write_bytes(name.encode())
            elif what == "link_in":
                path.symlink_to(served / "a")
            elif what == "link_out":
                path.symlink_to(outside / name)
        for asked in NAMES:
            assert remembered(names, served, asked) == fresh(served, asked)


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    assert not os.path.lexists(path)

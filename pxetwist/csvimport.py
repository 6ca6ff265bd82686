"""``pxetwist import FILE.csv``: machine rows for ``POST /machines`` from a CSV file.

One machine a line: ``mac,hostname,entry,once,key=value,...``. ``entry`` empty means local
boot; ``once`` is ``yes``/``no`` (also ``true``/``false``, ``1``/``0``, ``once``/
``permanent``; empty: no); every further cell is one template variable. Blank lines and
lines starting with ``#`` are skipped, and so is a first line whose first cell is ``mac``
(a header). The server checks MACs, host names, entries and variables; this module only
reads the file, and says which line each row came from so the server's row errors can be
told by line.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from attrs import frozen

_YES = {"yes", "true", "1", "once", "y"}
_NO = {"no", "false", "0", "permanent", "n", ""}


@frozen
class CsvRows:
    """What a CSV file holds.

    :ivar records: the ``POST /machines`` rows.
    :ivar lines: the file line each record came from (same order).
    :ivar errors: ``(line, reason)`` for each line that could not be read.
    """

    records: tuple[dict[str, Any], ...]
    lines: tuple[int, ...]
    errors: tuple[tuple[int, str], ...]


def read_rows(text: str) -> CsvRows:
    """The machine rows of a CSV file's ``text``."""
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    errors: list[tuple[int, str]] = []
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    first = True
    try:
        for cells in reader:
            line = reader.line_num
            cells = [cell.strip() for cell in cells]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if first and cells[0].lower() == "mac":
                first = False
                continue
            first = False
            try:
                records.append(_record(cells))
                lines.append(line)
            except ValueError as e:
                errors.append((line, str(e)))
    except csv.Error as e:
        errors.append((reader.line_num, f"not CSV: {e}"))
    return CsvRows(tuple(records), tuple(lines), tuple(errors))


def _record(cells: list[str]) -> dict[str, Any]:
    cells = cells + [""] * (4 - len(cells))
    mac, hostname, entry, once = cells[:4]
    if not mac:
        raise ValueError("the first cell must be the MAC address")
    if once.lower() not in _YES | _NO:
        raise ValueError(f"once must be yes or no, not {once!r}")
    record: dict[str, Any] = {"mac": mac, "entry": entry or None,
                              "once": once.lower() in _YES}
    if hostname:
        record["hostname"] = hostname
    variables: dict[str, str] = {}
    for cell in cells[4:]:
        if not cell:
            continue
        name, equals, value = cell.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"variable {cell!r} must be key=value")
        if name.strip() in variables:
            raise ValueError(f"variable {name.strip()!r} is given twice")
        variables[name.strip()] = value
    if variables:
        record["vars"] = variables
    return record

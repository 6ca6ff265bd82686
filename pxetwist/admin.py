"""``pxetwist-admin``: offline operations on a server's state.

``pxetwist-admin migrate SQLITE_FILE POSTGRESQL_URL`` copies one server's SQLite state
(leases, machines and their history, catalog settings, secrets: callback tokens stay
valid) into a PostgreSQL database, in one transaction, so several servers can share it.
The database is migrated to the current schema first and must hold no state yet. Stop
the server first: the file is read as it is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pxetwist.store import Store, StoreError
from pxetwist.store_postgres import PostgresStore, is_postgres_url, redact

#: The tables copied, each with its columns (an event's id is the target's own).
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leases", ("ip", "mac", "client_id", "hostname", "expires", "state")),
    ("machines", ("mac", "first_seen", "last_seen", "ip", "arch", "uuid", "state", "entry",
                  "once", "last_stage", "assignment", "hostname", "vars", "loader")),
    ("catalog_settings", ("entry_id", "pxe", "label", "position", "is_default",
                          "kernel_args")),
    ("events", ("time", "mac", "ip", "stage", "detail", "arch", "uuid")),
    ("secrets", ("name", "value")),
)


def migrate(source: Path, url: str) -> dict[str, int]:
    """Copy the state file ``source`` into the database at ``url``; rows per table.

    :raises StoreError: when either cannot be used, or the database holds state already.
    """
    if not source.is_file():
        raise StoreError(f"state file {source}: no such file")
    sqlite = Store(source)
    try:
        target = PostgresStore(url)
        try:
            holding = [table for table, _ in TABLES
                       if target._read(f"SELECT 1 FROM {table} LIMIT 1")]
            if holding:
                raise StoreError(f"state {redact(url)}: already holds state"
                                 f" ({', '.join(holding)}): not overwritten")
            statements: list[tuple[str, Sequence[object]]] = []
            counts: dict[str, int] = {}
            for table, columns in TABLES:
                order = " ORDER BY id" if table == "events" else ""
                rows = sqlite._read(f"SELECT {', '.join(columns)} FROM {table}{order}")
                counts[table] = len(rows)
                insert = (f"INSERT INTO {table} ({', '.join(columns)})"
                          f" VALUES ({', '.join('?' * len(columns))})")
                statements.extend((insert, row) for row in rows)
            target._write(statements)
            return counts
        except Exception as e:
            if isinstance(e, StoreError) or not type(e).__module__.startswith("psycopg"):
                raise
            raise StoreError(f"state {redact(url)}: {str(e).strip().splitlines()[0]}"
                             ) from None
        finally:
            target.close()
    finally:
        sqlite.close()


def main(argv: Sequence[str] | None = None) -> None:
    top = argparse.ArgumentParser(prog="pxetwist-admin",
                                  description="Offline operations on a pxetwist state.")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    move = sub.add_parser("migrate", help="copy an SQLite state file into PostgreSQL",
                          description=__doc__)
    move.add_argument("sqlite_file", type=Path, help="the [server] state file to copy")
    move.add_argument("postgresql_url", help="postgresql://... (the password may come from"
                                             " PGPASSFILE or PGPASSWORD instead)")
    args = top.parse_args(sys.argv[1:] if argv is None else argv)
    if not is_postgres_url(args.postgresql_url):
        top.error("POSTGRESQL_URL must start with postgresql:// or postgres://")
    try:
        counts = migrate(args.sqlite_file, args.postgresql_url)
    except StoreError as e:
        raise SystemExit(f"pxetwist-admin: {e}") from None
    print(f"copied {args.sqlite_file} into {redact(args.postgresql_url)}: "
          + ", ".join(f"{count} {table}" for table, count in counts.items()))


if __name__ == "__main__":
    main()

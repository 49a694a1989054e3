"""`migrate-to-postgres`: copy a whole log from another backend into an empty PostgreSQL
database, then verify the copy from PostgreSQL alone.

The source is any object with the SqliteDump methods (storage/sqlite/dump.py): tables,
columns, count, rows, meta, head, tree_size, tree_root. Tables are matched by name and
columns by name, so a table a later migration adds on both sides is copied without a change
here; a non-empty source table or column that has no place on PostgreSQL stops the copy
before anything is written, since copying the rest would lose it silently.

The copy is one transaction: a failure (or Ctrl-C) leaves the target as empty as it was, and
a server started on the target meanwhile cannot interleave (its first write takes the
chain-head row this transaction holds, and its project id collides with the copied one).
Rows travel with COPY in pages; each event's filter keys and full-text document are computed
by the functions the intake and erasure use.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import psycopg

from ...errors import ConfigError
from ...integrity.checkpoint import event_leaf_hash
from ...integrity.retention import RetentionCheckpoint, Tombstone, check_checkpoint
from ...integrity.tiles import TreeEdge
from ...integrity.verify import ChainVerifier
from ..backend import describe_location as _redact
from .. import secret_check
from ..base import ExportRecord
from ..chain_scan import CHAIN_COLUMNS as _CHAIN_COLUMNS, verified_items
from ..fts import fts_columns
from ..keys import event_keys
from .connection import connect_once
from .erasure import erased_fts_columns
from .migrate import migrate
from .search_doc import search_document

Progress = Callable[[int, int], None]

# meta rows that describe SQLite's own bookkeeping (an FTS5 merge or WAL truncation still
# owed after an erasure): meaningless on PostgreSQL, where erasure rewrites the row itself.
SOURCE_ONLY_META = frozenset({"erasure_purge_pending", "erasure_wal_truncate_pending"})
# Tables whose rows the copy writes itself (meta, filtered) or must not touch.
SPECIAL_TABLES = frozenset({"meta", "events", "chain_head", "schema_migrations"})
# Events are read, keyed and sent per page of this many.
VERIFY_FETCH = 5000

_make_export = ExportRecord._make


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _target_columns(conn: psycopg.Connection) -> dict[str, dict[str, str]]:
    """table -> column -> data type, for the public schema."""
    out: dict[str, dict[str, str]] = {}
    for table, column, data_type in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"):
        out.setdefault(table, {})[column] = data_type
    return out


def why_not_empty(conn: psycopg.Connection, tables: list[str]) -> str | None:
    """Why the target cannot take a copy (it already holds a log, or rows in a table the
    copy writes), or None."""
    project = conn.execute("SELECT value FROM meta WHERE key = 'project_id'").fetchone()
    head = conn.execute("SELECT seq FROM chain_head WHERE id = 1").fetchone()
    if project is not None or (head is not None and head[0]):
        return (f"it already holds a recalled-lite log (project {project[0] if project else '?'}, "
                f"{head[0] if head else 0:,} events)")
    for table in ["meta", "events", *tables]:
        if conn.execute(f"SELECT EXISTS (SELECT 1 FROM {_quote(table)})").fetchone()[0]:
            return f"its table {table} is not empty"
    return None


def _plan(source: Any, target: dict[str, dict[str, str]]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """[(table, columns to copy)] in the source's creation order, and what cannot be copied."""
    plan, problems = [], []
    for table in source.tables():
        if table in SPECIAL_TABLES and table != "events":
            continue
        columns = source.columns(table)
        if table not in target:
            if source.count(table):
                problems.append(f"table {table} ({source.count(table):,} rows) has no PostgreSQL table")
            continue
        missing = [c for c in columns if c not in target[table]]
        if missing and source.count(table):
            problems.append(f"{table}.{', '.join(missing)} has no PostgreSQL column")
            continue
        plan.append((table, columns))
    return plan, problems


def _converters(columns: list[str], types: dict[str, str]) -> list[Callable[[Any], Any] | None]:
    def boolean(value: Any) -> Any:
        return None if value is None else bool(value)

    def text(value: Any) -> Any:
        return value if value is None or isinstance(value, str) else str(value)

    def binary(value: Any) -> Any:
        return value.encode() if isinstance(value, str) else value

    by_type = {"boolean": boolean, "text": text, "character varying": text, "bytea": binary}
    return [by_type.get(types[c]) for c in columns]


def _convert(page: list[tuple[Any, ...]], converters: list[Callable[[Any], Any] | None]) -> Iterator[list[Any]]:
    active = [(i, f) for i, f in enumerate(converters) if f is not None]
    for row in page:
        out = list(row)
        for i, f in active:
            out[i] = f(out[i])
        yield out


def _event_extras(row: list[Any], at: dict[str, int]) -> tuple[str, str]:
    """The filter keys (a text[] literal) and the full-text document (a tsvector literal) of
    a stored event row, as intake computes them, or, for an erased row, as erasure rewrote
    them (no actor, no metadata: storage/postgres/erasure.py, like SQLite's)."""
    org, action, targets = row[at["organization"]], row[at["action"]], row[at["targets"]]
    # Keys are letters and hex digits only (keys.py): no element needs quoting. An erased
    # row's actor id is already '[deleted]', which is what erasure keys it by.
    keys = "{" + event_keys(org, action, row[at["actor_id"]],
                            json.loads(targets) if targets else None).replace(" ", ",") + "}"
    if row[at["erased_at"]] is not None:
        fts = erased_fts_columns(action, org, targets)
    else:
        fts = fts_columns(action, row[at["actor_id"]], row[at["actor_name"]], row[at["actor_email"]], org,
                          targets, row[at["metadata"]])
    return keys, search_document(fts)


def _copy_table(conn: psycopg.Connection, source: Any, table: str, columns: list[str],
                types: dict[str, str], step: Callable[[int], None]) -> int:
    converters = _converters(columns, types)
    names = ", ".join(_quote(c) for c in columns)
    done = 0
    with conn.cursor() as cur:
        for page in source.rows(table, columns):
            with cur.copy(f"COPY {_quote(table)} ({names}) FROM STDIN") as copy:
                for row in _convert(page, converters):
                    copy.write_row(row)
            done += len(page)
            step(len(page))
    return done


def _copy_events(conn: psycopg.Connection, source: Any, columns: list[str], types: dict[str, str],
                 step: Callable[[int], None]) -> int:
    converters = _converters(columns, types)
    at = {c: i for i, c in enumerate(columns)}
    names = ", ".join(_quote(c) for c in columns)
    done = 0
    with conn.cursor() as cur:
        for page in source.rows("events", columns):
            # keys and search travel as the text of a text[] and a tsvector: COPY parses them
            # with the types' own input functions, as a text parameter cast to them would.
            with cur.copy(f"COPY events ({names}, keys, search) FROM STDIN") as copy:
                for row in _convert(page, converters):
                    copy.write_row([*row, *_event_extras(row, at)])
            done += len(page)
            step(len(page))
    return done


def _advance_sequences(conn: psycopg.Connection) -> None:
    """Copied rows carry their ids: a serial or identity column's sequence must start after
    them, or the next insert would collide."""
    rows = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND (column_default LIKE 'nextval(%%' OR is_identity = 'YES')"
    ).fetchall()
    for table, column in rows:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, %s), coalesce(max({_quote(column)}), 0) + 1, false) "
            f"FROM {_quote(table)}", (_quote(table), column))


def copy_log(source: Any, url: str, *, progress: Progress | None = None) -> dict[str, Any]:
    """Copy everything `source` holds into the (empty) database at `url`. Returns what was
    copied: {"tables": {name: rows}, "head": {...}, "treeSize": n, "projectId": ...}."""
    try:
        conn = connect_once(url)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to {_redact(url)}: {str(exc).strip()}") from None
    try:
        try:
            migrate(conn)
        except RuntimeError as exc:
            raise ConfigError(f"{_redact(url)}: {exc}") from None
        target = _target_columns(conn)
        plan, problems = _plan(source, target)
        if problems:
            raise ConfigError("this PostgreSQL schema cannot hold everything in the source, so nothing was "
                              "copied: " + "; ".join(problems) + ". Use the recalled-lite version that wrote "
                              "the source (or a newer one) on both sides")
        meta = {k: v for k, v in source.meta().items() if k not in SOURCE_ONLY_META}
        head_seq, head_hash = source.head()
        tree_size = source.tree_size()
        if tree_size < head_seq:
            raise ConfigError(f"the source's Merkle tree covers {tree_size:,} of {head_seq:,} events: start "
                              "`recalled-lite serve` on it once (it builds the tree), stop it, then copy")
        if tree_size > head_seq:  # the head is never purged (retention), so this is damage
            raise ConfigError(f"the source's Merkle tree has {tree_size:,} leaves but its head is seq "
                              f"{head_seq:,}: the file was altered; check it with `recalled-lite verify`")
        counts = {table: source.count(table) for table, _ in plan}
        total = sum(counts.values()) + len(meta)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        # Taken first: a server started on the target meanwhile waits behind this copy.
        conn.execute("SELECT seq FROM chain_head WHERE id = 1 FOR UPDATE")
        reason = why_not_empty(conn, [t for t, _ in plan])
        if reason is not None:
            raise ConfigError(
                f"{_redact(url)} is not empty: {reason}. migrate-to-postgres copies into an empty database "
                "only, so that nothing there is overwritten or mixed into the copied chain: create a new "
                "database (createdb NAME) and pass its URL")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO meta (key, value) VALUES (%s, %s)", list(meta.items()))
        step(len(meta))
        copied = {"meta": len(meta)}
        for table, columns in plan:
            if table == "events":
                copied[table] = _copy_events(conn, source, columns, target[table], step)
            else:
                copied[table] = _copy_table(conn, source, table, columns, target[table], step)
        conn.execute("UPDATE chain_head SET seq = %s, hash = %s, tree_size = %s WHERE id = 1",
                     (head_seq, head_hash, tree_size))
        _advance_sequences(conn)
        conn.commit()
        # Planner statistics now, not whenever autovacuum gets to it: a server started on the
        # copy would otherwise plan its first lists and searches on a table it thinks empty.
        conn.autocommit = True
        conn.execute("ANALYZE")
        return {"projectId": meta.get("project_id"), "tables": copied,
                "head": {"seq": head_seq, "hash": head_hash}, "treeSize": tree_size}
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()


# -- verification, from PostgreSQL alone ---------------------------------------------------------


def _has_table(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def _read_tile(conn: psycopg.Connection, level: int, index: int) -> bytes | None:
    strips = conn.execute("SELECT hashes FROM merkle_tiles WHERE level = %s AND idx = %s ORDER BY strip",
                          (level, index)).fetchall()
    return b"".join(bytes(row[0]) for row in strips) if strips else None


def _events(conn: psycopg.Connection) -> Iterator[ExportRecord]:
    with conn.cursor(name="verify_copy") as cur:  # server-side: memory stays flat
        cur.itersize = VERIFY_FETCH
        cur.execute(f"SELECT {_CHAIN_COLUMNS} FROM events ORDER BY seq")
        for row in cur:
            record = _make_export(row)
            yield record._replace(personal_salt=bytes(record.personal_salt)) if record.personal_salt else record


def _tombstones(conn: psycopg.Connection) -> list[Tombstone]:
    if not _has_table(conn, "retention_tombstones"):
        return []
    return [Tombstone(*row) for row in conn.execute(
        "SELECT seq, hash, signature, checkpoint_id FROM retention_tombstones ORDER BY seq")]


def _retention_verdicts(conn: psycopg.Connection, project_id: str, secret: bytes,
                        stones: list[Tombstone]) -> dict[int, str | None]:
    """Each retention checkpoint that tombstones name: None if it verifies, else why not."""
    if not stones:
        return {}
    fields = ", ".join(RetentionCheckpoint._fields)
    cps = {row[0]: RetentionCheckpoint(*row) for row in conn.execute(
        f"SELECT {fields} FROM retention_checkpoints ORDER BY id")}
    under: dict[int, list[tuple[int, str]]] = {}
    for stone in stones:
        under.setdefault(stone.checkpoint_id, []).append((stone.seq, stone.hash))
    verdicts: dict[int, str | None] = {}
    for cp_id in under:
        cp = cps.get(cp_id)
        before = cps.get(cp_id - 1)
        if cp is None:
            verdicts[cp_id] = f"its retention checkpoint {cp_id} is missing"
        elif cp_id > 1 and before is None:
            verdicts[cp_id] = f"retention checkpoint {cp_id - 1} is missing"
        else:
            verdicts[cp_id] = check_checkpoint(project_id, cp, under[cp_id], secret,
                                               before.hash if before else None)
    return verdicts


def verify_copy(url: str, secret: bytes, expected: dict[str, Any], source_root: bytes,
                progress: Progress | None = None) -> dict[str, Any]:
    """Verify the log at `url` on its own: every event's hash and signature (with `secret`),
    the links through retention tombstones, the Merkle tree rebuilt from the events against
    the stored tiles and the source's root, the chain-head row and the row counts."""
    conn = connect_once(url)
    try:
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        project_id = meta["project_id"]
        secret_check.require_match(meta, secret, "the copied secret check does not match this secret")
        head_seq, head_hash, tree_size = conn.execute(
            "SELECT seq, hash, tree_size FROM chain_head WHERE id = 1").fetchone()
        stones = _tombstones(conn)
        verdicts = _retention_verdicts(conn, project_id, secret, stones)
        total = expected["tables"]["events"] + len(stones)
        verifier = ChainVerifier(project_id, secret)
        edge, leaves, done = TreeEdge(), [], 0
        for item in verified_items(verifier, _events(conn), stones, verdicts.__getitem__):
            leaves.append(event_leaf_hash(item.hash, item.signature))
            done += 1
            if len(leaves) == VERIFY_FETCH:
                edge, _ = edge.append(leaves)
                leaves = []
                if progress is not None:
                    progress(done, total)
        if leaves:
            edge, _ = edge.append(leaves)
        if progress is not None:
            progress(done, total)
        chain = verifier.result()
        stored_root = TreeEdge.load(tree_size, lambda level, index: _read_tile(conn, level, index)).root()
        counts = {table: conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
                  for table in expected["tables"]}
        problems = []
        if (head_seq, head_hash) != (expected["head"]["seq"], expected["head"]["hash"]):
            problems.append(f"chain_head is ({head_seq}, {head_hash}), the source's head "
                            f"({expected['head']['seq']}, {expected['head']['hash']})")
        if tree_size != expected["treeSize"] or edge.size != tree_size:
            problems.append(f"tree size {tree_size}, source {expected['treeSize']}, events and tombstones {edge.size}")
        if stored_root != source_root:
            problems.append("the Merkle root of the copied tiles differs from the source's")
        if edge.size == tree_size and edge.root() != stored_root:
            problems.append("the Merkle root rebuilt from the copied events differs from the copied tiles'")
        for table, rows in expected["tables"].items():
            if counts[table] != rows:
                problems.append(f"{table} has {counts[table]:,} rows, {rows:,} were copied")
        conn.rollback()
        return {"valid": chain["valid"] and not problems, "chain": chain, "problems": problems,
                "treeSize": tree_size, "rootHash": stored_root.hex(), "rootMatchesSource": stored_root == source_root,
                "purgedAccountedFor": len(stones), "rows": counts}
    finally:
        conn.close()

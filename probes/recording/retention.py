"""Retention: thin older sweeps to a coarser resolution, drop what is older than the retention or over the
size limit (oldest first), like RRD tools do; freed pages go back to the file system."""

from __future__ import annotations

import sqlite3

from .schema import write_transaction

# (age in seconds, keep one sweep per this many seconds): past an hour one a minute, past a day one per 10 min.
TIERS = ((3600, 60), (86400, 600))


def used_bytes(db: sqlite3.Connection) -> int:
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def bound_wal(db: sqlite3.Connection, max_bytes: int) -> None:
    """Keep the write-ahead log small beside a size cap: checkpoint after about a tenth of the cap has been
    written to it (SQLite's default is 1000 pages, 8 MB at our page size: more than a small cap itself), and
    truncate it back to that size after each checkpoint instead of leaving it at its largest."""
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    limit = max(256 << 10, min(8 << 20, max_bytes // 10))
    db.execute(f"PRAGMA wal_autocheckpoint={max(16, limit // page_size)}")
    db.execute(f"PRAGMA journal_size_limit={limit}")


def _release_free_pages(db: sqlite3.Connection) -> None:
    # The pragma frees one page per step and Python's execute() steps once; executescript steps to the end.
    db.executescript("PRAGMA incremental_vacuum;")


def thin(db: sqlite3.Connection, now_ms: int) -> int:
    """Consolidate each bucket of step_s seconds older than its tier into one sweep (see consolidate.py);
    returns how many sweeps were removed. Cut-offs fall on bucket edges, so a bucket is consolidated whole,
    once per tier."""
    from . import codec
    from .consolidate import merge_containers, merge_gpus

    removed = 0
    for age_s, step_s in TIERS:
        step_ms = step_s * 1000
        cutoff = (now_ms - age_s * 1000) // step_ms * step_ms
        rows = db.execute("SELECT t, gpus, containers FROM sweeps WHERE t < ? AND step_s < ? ORDER BY t",
                          (cutoff, step_s)).fetchall()
        buckets: dict[int, list] = {}
        for row in rows:
            buckets.setdefault(row[0] // step_ms, []).append(row)
        for group in buckets.values():
            first = group[0][0]
            if len(group) > 1:
                blob = merge_containers([codec.unpack_containers(r[2]) for r in group])
                gpus = merge_gpus([codec.unpack_gpus(r[1]) for r in group])
                db.execute("UPDATE sweeps SET containers = ?, gpus = ? WHERE t = ?", (blob, gpus, first))
                db.executemany("DELETE FROM sweeps WHERE t = ?", [(r[0],) for r in group[1:]])
                removed += len(group) - 1
            db.execute("UPDATE sweeps SET step_s = ? WHERE t = ?", (step_s, first))
    return removed


def trim_to_size(db: sqlite3.Connection, max_bytes: int) -> int:
    """Drop the oldest sweeps (and events older than what is left) until the data fits in max_bytes."""
    removed = 0
    for _ in range(64):
        used = used_bytes(db)
        if used <= max_bytes:
            break
        count = db.execute("SELECT COUNT(*) FROM sweeps").fetchone()[0]
        if count <= 1:
            break
        # Estimate how many sweeps hold the excess, plus a margin so this rarely loops.
        share = (used - max_bytes) / used
        drop = max(1, min(count - 1, int(count * share * 1.1) + 1))
        border = db.execute("SELECT t FROM sweeps ORDER BY t LIMIT 1 OFFSET ?", (drop,)).fetchone()[0]
        removed += db.execute("DELETE FROM sweeps WHERE t < ?", (border,)).rowcount
        db.execute("DELETE FROM events WHERE t < ?", (border,))
    return removed


def _update_last_seen(db: sqlite3.Connection, last_seen: dict[int, int]) -> None:
    if last_seen:
        db.executemany("UPDATE containers SET last_t = ? WHERE cid = ? AND last_t < ?",
                       [(t, cid, t) for cid, t in last_seen.items()])


def note_last_seen(db: sqlite3.Connection, last_seen: dict[int, int]) -> None:
    """Write when each container was last seen (`last_seen`: cid -> t in ms, emptied once written)."""
    with write_transaction(db):
        _update_last_seen(db, last_seen)
    last_seen.clear()


def enforce(db: sqlite3.Connection, retention_s: float, max_bytes: int, last_seen: dict[int, int],
            now_ms: int | None = None, keep: set[int] | None = None, headroom_bytes: int = 0) -> int:
    """One retention pass (the writer thread runs it between sweeps); returns how many container rows were
    dropped (names no kept sweep refers to: none of `keep`, the writer's last sweep's). The size trim leaves
    `headroom_bytes` below max_bytes (what the recording grew since the last pass, at most half the cap), so
    that it stays within the cap until the next pass rather than only right after this one."""
    import time

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    oldest_kept = now_ms - int(retention_s * 1000)
    with write_transaction(db):
        db.execute("DELETE FROM sweeps WHERE t < ?", (oldest_kept,))
        db.execute("DELETE FROM events WHERE t < ?", (oldest_kept,))
        thin(db, now_ms)
        _update_last_seen(db, last_seen)
    last_seen.clear()  # (once written: kept for the next pass when this one failed)
    # Outside a transaction: incremental_vacuum and the size trim commit as they go.
    _release_free_pages(db)
    target = max_bytes - min(max(0, headroom_bytes), max_bytes // 2)
    if used_bytes(db) > target:
        with write_transaction(db):
            trim_to_size(db, target)
        _release_free_pages(db)
    # Names of containers no sweep refers to any more.
    first = db.execute("SELECT MIN(t) FROM sweeps").fetchone()[0]
    dropped = 0
    if first is not None:
        # `keep`: the containers of the writer's last sweep, whatever last_t says (belt and braces: it was just
        # written above, from `last_seen`).
        stale = [cid for (cid,) in db.execute("SELECT cid FROM containers WHERE last_t < ?", (first,))
                 if cid not in (keep or ())]
        db.executemany("DELETE FROM containers WHERE cid = ?", [(cid,) for cid in stale])
        dropped = len(stale)
    # Copy the WAL into the file and empty it, so the freed pages really leave the disk (a reader holding
    # an old snapshot makes this a no-op until next time).
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return dropped

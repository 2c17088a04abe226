"""The history database's tables, its version in PRAGMA user_version, and opening it for writing or reading."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from typing import Iterator

from ..safe_files import open_private, refuse_links

# Bump with a new entry in MIGRATIONS; a database is moved forward one step at a time when a recorder opens it.
SCHEMA_VERSION = 4
PAGE_SIZE = 8192

# Times are integer milliseconds since the epoch. Container ids, names, images and configurations are
# interned in `containers` (one row per distinct version of a container's identity and config), GPUs' fixed
# facts in `gpu_info`, host facts in `hosts`; a sweep refers to them by small integers inside its packed blob.
_V1 = """
-- AUTOINCREMENT: an id is never reused after retention drops its row, so a reader's cache stays right.
CREATE TABLE hosts(hid INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL);
CREATE TABLE gpu_info(gid INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL);
CREATE TABLE containers(
    cid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    image TEXT NOT NULL,
    config TEXT NOT NULL,
    first_t INTEGER NOT NULL,
    last_t INTEGER NOT NULL
);
CREATE INDEX containers_by_id ON containers(id);
CREATE TABLE sweeps(
    t INTEGER PRIMARY KEY,          -- ms; the rowid, so no separate index
    interval_ms INTEGER,
    hid INTEGER NOT NULL,
    step_s INTEGER NOT NULL DEFAULT 0, -- 0: as sampled; 60, 600: thinned to one sweep per step_s
    host_load TEXT,                 -- [iowait %, psi cpu, psi memory, psi io] (null where unknown)
    gpus BLOB,                      -- zlib(JSON), null without GPUs
    containers BLOB NOT NULL        -- zlib(column-major uint32 arrays), see codec.py
);
-- The times alone, in a few pages: listing them must not read every sweep's blob.
CREATE INDEX sweeps_by_t ON sweeps(t);
CREATE TABLE events(
    eid INTEGER PRIMARY KEY,
    t INTEGER NOT NULL,
    source TEXT NOT NULL,   -- engine | nvml | finding | mltop
    kind TEXT NOT NULL,     -- die, oom, start... | down, up | appeared, cleared | recorder_started
    container_id TEXT,
    container TEXT,
    severity TEXT,
    code TEXT,
    title TEXT,
    detail TEXT             -- JSON: exit_code, evidence, fix, reason...
);
CREATE INDEX events_by_t ON events(t);
"""

# 2: pod containers' QoS class and GPU allocations (in use, unused since), interned; a sweep's container blob
# ends with one id per container when any has them (codec.py). Version-1 blobs decode unchanged.
_V2 = """
CREATE TABLE pod_facts(pfid INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL);
"""

# 3: GPU Performance Metrics end the GPU rows of a GPU (and the MIG devices) that has them (codec.gpu_row); no
# table changes, but an mltop that reads up to version 2 would misread such a row: the version tells it to stop.
# Version-1 and -2 sweeps decode unchanged, and a sweep without GPM is written byte for byte as in version 2.
_V3 = ""

# 4: silences (silences.py): findings the team already knows about, and GPUs set healthy after a repair. The
# recorder's writer never touches this table; `mltop silence`, the dashboard and the agent write it in short
# transactions of their own (WAL: one writer at a time, the others wait up to the busy timeout).
_V4 = """
CREATE TABLE silences(
    sid INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL,      -- a finding code, or gpu.healthy_since for a GPU set healthy
    target TEXT NOT NULL,    -- '' host-wide; a container name; namespace/pod; gpu:N or gpu:UUID
    since INTEGER NOT NULL,  -- ms
    until INTEGER,           -- ms; null: until removed
    reason TEXT NOT NULL,
    detail TEXT              -- JSON: the GPU's UUID and ECC counts when it was set healthy
);
"""

MIGRATIONS = {1: _V1, 2: _V2, 3: _V3, 4: _V4}  # version reached -> script taking the previous version there


class SchemaTooNew(Exception):
    """The file was written by a newer mltop."""


def connect_writer(path: str) -> sqlite3.Connection:
    """Open (creating) the database for the one writer: WAL, schema migrated forward. The file is created 0600
    (SQLite gives its -wal and -shm the database's mode) and never reached through a symbolic link: sqlite3
    cannot open with O_NOFOLLOW, so safe_files creates or checks the file first and SQLite then opens that
    name, in the directory the recorder made private (Recorder.start). Raises safe_files.UnsafeFile for a link."""
    path = os.path.abspath(path)
    refuse_links(*(path + suffix for suffix in ("-wal", "-shm", "-journal")))
    os.close(open_private(path))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        db.close()
        raise SchemaTooNew(f"{path} has schema version {version}; this mltop reads up to {SCHEMA_VERSION}")
    if version == 0:
        # Both only apply before anything is written. A sweep of 100 containers is a ~2.5 kB row: 4 kB pages
        # would hold one each and waste a third; larger pages waste less, but every commit rewrites whole
        # pages into the WAL (8 kB pages: ~25 kB a sweep).
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        # Lets retention hand freed pages back to the file system.
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL: a killed process loses nothing committed; a power cut may lose the last transactions.
    db.execute("PRAGMA synchronous=NORMAL")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        # One script, one transaction: a crash mid-migration leaves the previous version intact.
        db.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[target]}\nPRAGMA user_version={target};\nCOMMIT;")
    return db


def connect_reader(path: str) -> sqlite3.Connection:
    """Open an existing database to read (replay, `mltop events`, reports) while a recorder may write. An older
    version is read as it is (nothing is migrated by a reader): readers ask for a later version's tables only
    where they exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no recording at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5.0)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        db.close()
        raise ValueError(f"{path} is not an mltop recording (no schema version)")
    if version > SCHEMA_VERSION:
        db.close()
        raise SchemaTooNew(f"{path} has schema version {version}; this mltop reads up to {SCHEMA_VERSION}")
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (SQLITE_FULL may have rolled it back already)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise

"""Numbered schema migrations. Append only: never edit a migration that shipped."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: boxes (durable intent) and image names
    """
    CREATE TABLE boxes (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        image        TEXT NOT NULL,
        spec         TEXT NOT NULL,
        status       TEXT NOT NULL,
        auto_remove  INTEGER NOT NULL DEFAULT 0,
        created_at   REAL NOT NULL,
        started_at   REAL,
        finished_at  REAL,
        pid          INTEGER,
        pid_start    REAL,
        last_error   TEXT
    );
    CREATE TABLE images (
        name        TEXT PRIMARY KEY,
        digest      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        source      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    """,
    # 2: what an image runs (OCI config: Env, Entrypoint, Cmd, WorkingDir, User), the
    # layer digests it was made of (kept while an image uses them) and its config digest
    """
    ALTER TABLE images ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE images ADD COLUMN layers TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE images ADD COLUMN image_id TEXT
    """,
    # 3: pools of spare boxes kept restored and ready (docs/pool.md): a pool is
    # the shape its spares have and how many to keep
    """
    CREATE TABLE pools (
        id          TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        created_at  REAL NOT NULL
    )
    """,
    # 4: what rode in a box's spec JSON beside the user's fields (a pending
    # create, its image's digest, a spare's pool and template key) becomes
    # columns, indexed where queries filter (a spare's pool or key, status);
    # existing rows' values move out of the spec
    """
    ALTER TABLE boxes ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE boxes ADD COLUMN image_digest TEXT;
    ALTER TABLE boxes ADD COLUMN pool TEXT;
    ALTER TABLE boxes ADD COLUMN spare_key TEXT;
    UPDATE boxes SET
        pending = coalesce(json_extract(spec, '$._pending_create'), 0) != 0,
        image_digest = json_extract(spec, '$.image_digest'),
        pool = json_extract(spec, '$._pool'),
        spare_key = json_extract(spec, '$._spare_key'),
        spec = json_remove(spec, '$._pending_create', '$.image_digest', '$._pool',
                           '$._spare_key');
    CREATE INDEX boxes_status ON boxes (status);
    CREATE INDEX boxes_pool ON boxes (pool);
    CREATE INDEX boxes_spare_key ON boxes (spare_key)
    """,
]

"""What a Runtime's collections and its Box handles share: the progress log,
the database (opened on first use), and the handles shared by every caller
(a server's requests). Runtime is one; nothing here knows the collections."""

from __future__ import annotations

import contextlib
import threading
from typing import Protocol

from microbox import paths
from microbox.core.log import Log, quiet
from microbox.store.db import Database


class Handle(Protocol):
    def release(self) -> None: ...


class Context:
    def __init__(self, *, log: Log | None = None) -> None:
        self.log: Log = log or quiet
        self._db: Database | None = None
        self._db_lock = threading.Lock()
        self._shared: dict[str, Handle] = {}
        self._shared_lock = threading.Lock()

    @property
    def db(self) -> Database:
        with self._db_lock:
            if self._db is None:
                self._db = Database(paths.database())
            return self._db

    def share(self, box_id: str, make: Handle) -> Handle:
        """The shared handle on a box: the one kept, or `make`, kept now."""
        with self._shared_lock:
            return self._shared.setdefault(box_id, make)

    def forget(self, box_id: str, handle: Handle) -> None:
        """A deleted box's shared handle goes (released, unless it is `handle`)."""
        with self._shared_lock:
            shared = self._shared.pop(box_id, None)
        if shared is not None and shared is not handle:
            shared.release()

    def close(self) -> None:
        with self._shared_lock:
            shared, self._shared = list(self._shared.values()), {}
        for handle in shared:
            handle.release()
        with self._db_lock:
            db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()

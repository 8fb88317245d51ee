"""One supervisor per database: a leader lock that only one API instance holds at a time.

PostgreSQL: a session-level advisory lock on a connection kept for the purpose (the server releases it
when that connection dies, so a killed leader frees it at once). SQLite: an exclusive `flock` on a file
next to the database (the kernel releases it with the process). Other instances serve the REST API and
try the lock again at every tick; whoever holds it supervises.
"""

from __future__ import annotations

import fcntl
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

ADVISORY_KEY = 0x7C150001
"""The advisory lock id of the supervisor (any bigint that nothing else in the database uses)."""


class LeaderLock(ABC):
    @abstractmethod
    def hold(self) -> bool:
        """Take the lock if it is free; True while this process holds it (checked, not remembered)."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up (at shutdown)."""


class AdvisoryLock(LeaderLock):
    """pg_try_advisory_lock on a dedicated connection; a dead connection means the lock is lost."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    def hold(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError as err:
                log.warning("leader lock lost with its database connection: %s", err)
                self._drop()
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as err:
            log.warning("leader lock: cannot connect: %s", err)
            return False
        try:
            won = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar())
            connection.commit()  # end the implicit transaction; the session-level lock stays
        except SQLAlchemyError as err:
            log.warning("leader lock: %s", err)
            connection.invalidate()
            connection.close()
            return False
        if not won:
            connection.close()
            return False
        self._connection = connection
        log.info("this instance is the supervisor (PostgreSQL advisory lock %d)", ADVISORY_KEY)
        return True

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()  # never back to the pool: the server ended that session
            self._connection.close()
            self._connection = None

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
                self._connection.commit()
            except SQLAlchemyError:
                pass
            self._connection.close()
            self._connection = None


class FileLock(LeaderLock):
    """An exclusive, non-blocking flock on `path` (a file beside the SQLite database)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def hold(self) -> bool:
        if self._file is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        file = os.fdopen(fd, "r+b")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        self._file = file
        log.info("this instance is the supervisor (lock file %s)", self.path)
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class AlwaysLeader(LeaderLock):
    """An in-memory SQLite database belongs to one process: nothing to share."""

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass


def leader_lock(engine: Engine) -> LeaderLock:
    """The lock that fits the database behind `engine`."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLock(Path(database).with_name(Path(database).name + ".supervisor-lock"))
    return AlwaysLeader()

"""The SQL store of runs and checkpoints (SQLite by default, PostgreSQL by URL)."""

from api.store.models import CheckpointRow, RunRow
from api.store.store import Conflict, NotFound, StaleToken, Store, make_engine, migrate, new_id

__all__ = ["CheckpointRow", "Conflict", "NotFound", "RunRow", "StaleToken", "Store", "make_engine", "migrate", "new_id"]

"""Alembic environment: runs on the connection the API hands over (see api.store.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from api.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line: -x url=... or sqlalchemy.url in its ini
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    with create_engine(url).begin() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()

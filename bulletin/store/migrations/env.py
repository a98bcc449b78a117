"""Alembic environment of the state store.

``bulletin.store.db.migrate`` passes an open connection (already in a transaction that holds the migration lock) in
``config.attributes["connection"]``. Without one, as when a developer runs Alembic by hand to write a revision, it
connects to ``sqlalchemy.url`` or else to the configured store (BULLETIN_DATABASE_URL or the SQLite default).

There is no alembic.ini. To write a revision after changing ``bulletin.store.ledger_schema``::

    .venv/bin/python -c "from alembic import command; from bulletin.store.db import alembic_config; \
        command.revision(alembic_config(), 'what changed', autogenerate=True, rev_id='0002')"
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from bulletin.store.base import metadata
from bulletin.store.db import VERSION_TABLE, normalise_url, open_store


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: later revisions get Alembic's copy-and-move batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def configured_url() -> str:
    from bulletin.settings import Settings

    return context.config.get_main_option("sqlalchemy.url") or Settings().database


if context.is_offline_mode():
    context.configure(
        url=normalise_url(configured_url()),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif (given := context.config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    with open_store(configured_url()) as store, store.write() as conn:
        run_migrations(conn)

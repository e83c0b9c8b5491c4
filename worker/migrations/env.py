"""Alembic's environment for the records (``worker/records.py``'s metadata).

``ephemesh db upgrade`` (``worker/schema.py``) hands in its connection;
the ``alembic`` command line (``alembic -c worker/migrations/alembic.ini``)
opens ``EPHEMESH_DATABASE_URL`` (else the data directory's SQLite file).
"""

from alembic import context
from sqlalchemy import create_engine

from worker.records import metadata

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from worker.config import Settings

    engine = create_engine(Settings.from_env().database_url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()

"""Alembic environment for tenantapp.

The URL comes from the environment, never from alembic.ini: SQLALCHEMY_DATABASE_TEST_URL (set by testshard, with
the admin role, pointing at the template database it is building), else SQLALCHEMY_DATABASE_URL. Either may be a
libpq-style unix-socket URL (``postgresql://postgres@/db?host=/tmp/sock&port=5432``); see tenantapp/dburl.py.
"""

from __future__ import annotations

import logging
import os
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool, text

# The project root (this directory's parent) must be importable for tenantapp and migrations.rls_helpers.
# alembic.ini's prepend_sys_path does it when run from there; this covers alembic -c /path/to/alembic.ini.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tenantapp.config import ConfigError  # noqa: E402
from tenantapp.dburl import describe, url_from_env  # noqa: E402
from tenantapp.models import Base  # noqa: E402
from migrations.rls_helpers import app_role  # noqa: E402

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")

target_metadata = Base.metadata


def _database_url():
    try:
        _, url = url_from_env(purpose="alembic (tenantapp migrations, run as the admin/owner role)")
    except ConfigError as exc:
        sys.exit(f"tenantapp migrations: {exc}")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _database_url()
    # NullPool: a pooled connection left open would keep the template database "being accessed by other users"
    # and make the CREATE DATABASE ... TEMPLATE that follows fail.
    engine = create_engine(url, poolclass=pool.NullPool, future=True)
    with engine.connect() as connection:
        user = connection.execute(text("SELECT current_user")).scalar_one()
        # With a future (2.0-style) connection that SELECT autobegan a transaction. Alembic would then treat the
        # migrations as part of a caller-managed transaction, never commit them, and the connection's close would
        # silently roll the whole upgrade back. End it first.
        connection.rollback()
        if user == app_role():
            sys.exit(f"tenantapp migrations: connected as the app role {user!r} ({describe(url)}); run migrations "
                     f"as a superuser or the schema owner, the app role must not own the tables")
        log.info("migrating %s", describe(url))
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

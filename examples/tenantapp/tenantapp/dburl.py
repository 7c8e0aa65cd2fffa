"""Turning the libpq-style URLs testshard and CI hand us into something SQLAlchemy 1.4 + psycopg2 accept.

testshard hands databases over as URLs such as::

    postgresql://postgres@/tsdb_ab12?host=/tmp/ts-xyz/sock&port=5432

libpq understands all of these, SQLAlchemy 1.4 only some of them, so this module normalises them:

* ``postgres://`` (Heroku, many CI templates) is refused by SQLAlchemy 1.4 ("Can't load plugin:
  sqlalchemy.dialects:postgres"); it becomes ``postgresql+psycopg2://``.
* A unix-socket directory in the query (``?host=/dir&port=N``) works as is: SQLAlchemy passes query
  parameters through to ``psycopg2.connect`` and libpq picks the socket ``/dir/.s.PGSQL.N``.
* A percent-encoded socket directory in the host part (``postgresql://u@%2Ftmp%2Fsock/db``, valid for libpq)
  is NOT decoded by SQLAlchemy 1.4, which then tries a DNS lookup of "%2Ftmp%2Fsock"; it is moved into the query.
* There may be no password at all (trust/peer auth on a private socket): nothing here assumes one.

Always pass the returned ``URL`` object to ``create_engine``, never ``str(url)``: SQLAlchemy renders the socket
directory as ``host=%2Ftmp%2F...``, and a ``%`` in a string handed to Alembic's ini-style config is taken as an
interpolation and fails.
"""

from __future__ import annotations

import os
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .config import DATABASE_URL_VARS, ConfigError

_ACCEPTED_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg2"}


def normalize_database_url(raw: str) -> URL:
    """Parse a libpq-style PostgreSQL URL into a SQLAlchemy URL that psycopg2 can connect with."""
    text = (raw or "").strip()
    if not text:
        raise ConfigError("the database URL is empty")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(f"not a URL (expected postgresql://...): {_redact(text)!r}")
    if scheme.lower() not in _ACCEPTED_SCHEMES:
        raise ConfigError(f"unsupported database URL scheme {scheme!r}: tenantapp needs PostgreSQL "
                          f"(postgresql:// or postgresql+psycopg2://)")
    try:
        url = make_url("postgresql+psycopg2://" + rest)
    except ArgumentError as exc:
        raise ConfigError(f"cannot parse database URL {_redact(text)!r}: {exc}") from None

    host = url.host
    if host and host.lower().startswith("%2f"):
        # libpq: "postgresql://%2Fvar%2Frun%2Fpostgresql/db" means the socket directory /var/run/postgresql.
        query = dict(url.query)
        query.setdefault("host", unquote(host))
        # URL.create rather than url.set(host=None): in SQLAlchemy 1.4, set() skips None values, so the host stays.
        url = URL.create(url.drivername, username=url.username, password=url.password, host=None, port=url.port,
                         database=url.database, query=query)
    if not url.database:
        raise ConfigError(f"the database URL names no database: {_redact(text)!r}")
    return url


def url_from_env(names: tuple[str, ...] = DATABASE_URL_VARS, *, purpose: str,
                 env: dict[str, str] | None = None) -> tuple[str, URL]:
    """Return (variable name, URL) for the first of ``names`` that is set, or fail saying what to set."""
    env = os.environ if env is None else env
    for name in names:
        value = env.get(name, "").strip()
        if value:
            try:
                return name, normalize_database_url(value)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    wanted = " or ".join(names)
    raise ConfigError(
        f"{wanted} is not set. {purpose} needs a PostgreSQL URL, for example "
        f"postgresql://postgres@/tenantapp?host=/run/postgresql (unix socket) or "
        f"postgresql://postgres:secret@localhost:5432/tenantapp")


def describe(url: URL) -> str:
    """A log-safe rendering: password hidden, socket directory readable."""
    query = dict(url.query)
    host = query.pop("host", None) or url.host or "localhost"
    port = query.pop("port", None) or url.port or 5432
    user = url.username or "(default user)"
    return f"{user}@{host}:{port}/{url.database}"


def _redact(text: str) -> str:
    # Hide anything between "://user:" and "@" so passwords never end up in error messages.
    scheme, sep, rest = text.partition("://")
    if "@" in rest:
        creds, _, tail = rest.rpartition("@")
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        rest = f"{creds}@{tail}"
    return f"{scheme}{sep}{rest}"

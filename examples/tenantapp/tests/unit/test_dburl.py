"""The URL forms testshard and CI hand over must reach psycopg2 intact (see tenantapp/dburl.py)."""

import pytest

from tenantapp.config import ConfigError
from tenantapp.dburl import describe, normalize_database_url, url_from_env

pytestmark = pytest.mark.unit


@pytest.mark.critical
@pytest.mark.parametrize(
    ("raw", "user", "database", "host", "port", "query_host", "query_port"),
    [
        # testshard's unix-socket hand-over
        ("postgresql://postgres@/tsdb_ab12?host=/tmp/ts-xyz/sock&port=5432",
         "postgres", "tsdb_ab12", None, None, "/tmp/ts-xyz/sock", "5432"),
        ("postgresql://app_user@/tsdb_ab12?host=/tmp/ts-xyz/sock&port=5432",
         "app_user", "tsdb_ab12", None, None, "/tmp/ts-xyz/sock", "5432"),
        # socket without a port; user in the query instead of the authority
        ("postgresql:///tenantapp?host=/run/postgresql&user=app_user",
         None, "tenantapp", None, None, "/run/postgresql", None),
        # libpq's percent-encoded socket directory in the host part
        ("postgresql://app_user@%2Frun%2Fpostgresql/tenantapp",
         "app_user", "tenantapp", None, None, "/run/postgresql", None),
        # plain TCP, with and without password, and the reference plan's CI URL
        ("postgresql://rhesis_user:test_password_123@localhost:5432/rhesis_test",
         "rhesis_user", "rhesis_test", "localhost", 5432, None, None),
        ("postgresql://app_user@127.0.0.1:55432/t_0f3a", "app_user", "t_0f3a", "127.0.0.1", 55432, None, None),
        # Heroku-style scheme and an explicit driver
        ("postgres://u@db.internal/app", "u", "app", "db.internal", None, None, None),
        ("postgresql+psycopg2://u@/app?host=/tmp/s", "u", "app", None, None, "/tmp/s", None),
    ],
    ids=["testshard-admin-socket", "testshard-app-socket", "socket-user-in-query", "percent-encoded-host",
         "tcp-with-password", "tcp-no-password", "postgres-scheme", "explicit-driver"],
)
def test_normalize_accepts_libpq_forms(raw, user, database, host, port, query_host, query_port):
    url = normalize_database_url(raw)
    assert url.drivername == "postgresql+psycopg2"
    assert url.username == user
    assert url.database == database
    assert url.host == host
    assert url.port == port
    assert url.query.get("host") == query_host
    assert url.query.get("port") == query_port


@pytest.mark.critical
def test_password_is_optional_and_never_invented():
    url = normalize_database_url("postgresql://app_user@/db?host=/tmp/x")
    assert url.password is None


def test_extra_libpq_parameters_pass_through():
    url = normalize_database_url("postgresql://u@/db?host=/tmp/x&application_name=testshard&sslmode=disable")
    assert url.query["application_name"] == "testshard"
    assert url.query["sslmode"] == "disable"


def test_normalize_rejects():
    for raw in ("", "mysql://u@localhost/db", "localhost:5432/db", "postgresql://u@localhost/"):
        with pytest.raises(ConfigError):
            normalize_database_url(raw)


def test_errors_never_echo_the_password():
    with pytest.raises(ConfigError) as excinfo:
        normalize_database_url("postgresql://u:hunter2@localhost/")
    assert "hunter2" not in str(excinfo.value)


def test_describe_is_log_safe():
    assert describe(normalize_database_url("postgresql://app_user@/tsdb?host=/tmp/s&port=5433")) == \
        "app_user@/tmp/s:5433/tsdb"
    assert describe(normalize_database_url("postgresql://u:secret@db:5432/app")) == "u@db:5432/app"
    assert describe(normalize_database_url("postgresql:///app?host=/run/postgresql")) == \
        "(default user)@/run/postgresql:5432/app"


def test_url_from_env_prefers_the_test_url():
    env = {"SQLALCHEMY_DATABASE_TEST_URL": "postgresql://a@/t?host=/s",
           "SQLALCHEMY_DATABASE_URL": "postgresql://b@/p?host=/s"}
    name, url = url_from_env(purpose="test", env=env)
    assert (name, url.username) == ("SQLALCHEMY_DATABASE_TEST_URL", "a")


def test_url_from_env_falls_back():
    name, url = url_from_env(purpose="test", env={"SQLALCHEMY_DATABASE_URL": "postgresql://b@/p?host=/s"})
    assert (name, url.database) == ("SQLALCHEMY_DATABASE_URL", "p")


@pytest.mark.critical
def test_url_from_env_explains_what_to_set():
    with pytest.raises(ConfigError, match="SQLALCHEMY_DATABASE_TEST_URL or SQLALCHEMY_DATABASE_URL is not set"):
        url_from_env(purpose="alembic", env={})


def test_url_from_env_names_the_bad_variable():
    with pytest.raises(ConfigError, match="^SQLALCHEMY_DATABASE_TEST_URL: unsupported"):
        url_from_env(purpose="x", env={"SQLALCHEMY_DATABASE_TEST_URL": "mysql://u@h/db"})

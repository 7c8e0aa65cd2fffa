"""testshard's pytest-django hand-off: makes the agent's database pytest-django's test database, as is.

Loaded by the agent (through PYTEST_PLUGINS) when the config says ``django_test_db = "reuse"``. The agent's database
is a clone of the template that the configured set-up commands (``manage.py migrate``) built, so it is already at
the migrations' head. Without this plugin pytest-django would create ``test_<NAME>`` next to it and run every
migration again, in every agent, and again whenever the warm worker restarts its session.

What it does, before any test runs:

* every alias in ``settings.DATABASES`` whose NAME is the agent's database (TESTSHARD_DJANGO_REUSE_DB) gets
  ``TEST["NAME"] = NAME``, so pytest-django's test database *is* that database;
* pytest-django's ``--reuse-db`` is switched on (and ``--create-db`` off), so Django's ``create_test_db(keepdb=True)``
  finds the database, applies any migration the template lacks (none, when ``template_inputs`` cover the
  migrations), serialises its contents for ``serialized_rollback``, and never drops it: testshard does, afterwards.

* the first serialisation of each reused database in this process is kept: testshard's warm worker may start
  pytest's session again in the same process (after the agent ran out of queued tests), and by then transactional
  tests have flushed the tables, so serialising again would lose what the migrations put there and make
  ``serialized_rollback`` restore nothing. (pytest-django's plain ``--reuse-db`` has that problem across runs.)

Aliases that name another database are left alone, and the plugin says so: they are not the agent's, and whatever
pytest-django does with them is shared by every agent on that server (testshard's hand-off check reports it).
"""

import os
import warnings

import pytest

_ENV = "TESTSHARD_DJANGO_REUSE_DB"


class TestshardDjangoWarning(UserWarning):
    pass


def _settings():
    try:
        from django.conf import settings
    except ImportError:
        return None
    try:
        settings.DATABASES  # imports the settings module, which pytest-django has named by now
    except Exception:  # ImproperlyConfigured: no DJANGO_SETTINGS_MODULE; pytest-django reports that itself
        return None
    return settings


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    name = os.environ.get(_ENV, "")
    if not name or hasattr(config, "workerinput"):
        return  # not asked, or inside an xdist worker (see below)
    if getattr(config.option, "numprocesses", None):
        # pytest-xdist inside the agent: pytest-django gives each xdist worker test_<NAME>_gwN, created from
        # scratch, and --reuse-db would leave them behind. Let it do just that.
        warnings.warn(TestshardDjangoWarning(
            "testshard: django_test_db = \"reuse\" does not apply under pytest-xdist (-n): each xdist worker "
            "creates and migrates its own test_<NAME>_gwN, inside this agent's namespace"))
        return
    if not config.pluginmanager.hasplugin("django"):
        warnings.warn(TestshardDjangoWarning(
            "testshard: django_test_db = \"reuse\" but pytest-django is not loaded in this pytest"))
        return
    settings = _settings()
    if settings is None:
        return
    reused = []
    for alias, db in settings.DATABASES.items():
        if db.get("NAME") == name:
            test = db.get("TEST")
            if test is None:
                test = db["TEST"] = {}
            test["NAME"] = name
            reused.append(alias)
    if not reused:
        names = ", ".join("%s=%r" % (alias, db.get("NAME")) for alias, db in settings.DATABASES.items())
        warnings.warn(TestshardDjangoWarning(
            "testshard: no alias in settings.DATABASES names this agent's database %r (%s): the settings do not "
            "read the variables testshard sets, so pytest-django creates its own test database, which every agent "
            "shares. Check [database.env] in the testshard config against the settings module." % (name, names)))
        return
    config.option.reuse_db = True
    config.option.create_db = False
    from django.db import connections

    for alias in reused:
        _keep_first_serialization(connections[alias])


def _keep_first_serialization(connection):
    creation = connection.creation
    original = creation.create_test_db

    def create_test_db(*args, **kwargs):
        kept = getattr(connection, "_test_serialized_contents", None)
        if kept is not None:
            kwargs["serialize"] = False
        name = original(*args, **kwargs)
        if kept is not None:
            connection._test_serialized_contents = kept
        return name

    creation.create_test_db = create_test_db

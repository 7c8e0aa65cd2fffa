"""Settings for the djangoapp example, read from the environment only.

The database comes in separate variables, as many Django deployments (and their CI) take it, rather than one URL:

    DB_HOST      host name, IP address, or a unix-socket directory (an absolute path)   default: localhost
    DB_PORT      port                                                                    default: 5432
    DB_NAME      database name                                                           default: djangoapp
    DB_USER      role                                                                    default: djangoapp
    DB_PASSWORD  password (empty for trust/peer authentication)                          default: empty

pytest-django then creates its test database, ``test_<DB_NAME>``, on the same server, or (under testshard with
``django_test_db = "reuse"``) uses ``DB_NAME`` itself, already migrated. Nothing here knows about testshard.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name, default):
    value = os.environ.get(name, "")
    return value if value != "" else default


SECRET_KEY = _env("DJANGO_SECRET_KEY", "insecure-development-key-change-me")
DEBUG = _env("DJANGO_DEBUG", "0") == "1"
ALLOWED_HOSTS = ["*"] if DEBUG else ["localhost", "testserver", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "lending",
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "djangoapp.urls"
WSGI_APPLICATION = "djangoapp.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": _env("DB_HOST", "localhost"),
        "PORT": _env("DB_PORT", "5432"),
        "NAME": _env("DB_NAME", "djangoapp"),
        "USER": _env("DB_USER", "djangoapp"),
        "PASSWORD": _env("DB_PASSWORD", ""),
        # Connections are kept for the life of the process (pytest's session), as a long-running service would.
        "CONN_MAX_AGE": None,
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

# Lending rules (see lending/rules.py).
LENDING_LOAN_DAYS = int(_env("LENDING_LOAN_DAYS", "14"))
LENDING_MAX_OPEN_LOANS = int(_env("LENDING_MAX_OPEN_LOANS", "5"))

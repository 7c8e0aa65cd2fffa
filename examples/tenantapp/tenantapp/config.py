"""Settings read from the environment.

The variable names follow the reference CI plan (``SQLALCHEMY_DATABASE_TEST_URL``, ``JWT_SECRET_KEY``,
``AUTH0_*``, ``AZURE_OPENAI_*``) so the same service runs unchanged under plain pytest, under testshard and in
production. Settings are read when ``get_settings()`` is called, not at import time, so tests can change the
environment and call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

# The two URL variables, in the order tooling (Alembic, the seed) looks at them. testshard sets the first one:
# with the admin role and the template database for migrations and seed, with the app role and a clone for tests.
DATABASE_URL_VARS = ("SQLALCHEMY_DATABASE_TEST_URL", "SQLALCHEMY_DATABASE_URL")

DEFAULT_APP_ROLE = "app_user"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    log_level: str = "INFO"
    # "test" makes the running app (not pytest, which builds its own engine) use SQLALCHEMY_DATABASE_TEST_URL.
    db_mode: str = "production"
    database_url: str | None = None
    database_test_url: str | None = None
    app_role: str = DEFAULT_APP_ROLE

    jwt_secret_key: str | None = None
    jwt_algorithm: str = "HS256"
    jwt_access_token_expire_minutes: int = 30
    # Auth0 puts the API identifier in ``aud`` and the tenant domain in ``iss``; we verify both.
    auth0_domain: str = "tenantapp.local"
    auth0_audience: str = "tenantapp-api"

    azure_openai_endpoint: str = "https://example.openai.azure.com"
    azure_openai_api_key: str | None = None
    azure_openai_deployment_name: str = "gpt-4o-mini"
    azure_openai_api_version: str = "2024-02-01"
    ai_timeout_seconds: float = 30.0
    # First retry delay for failed model calls (doubles per attempt). Tests set it to 0.
    ai_retry_backoff_seconds: float = 0.5

    # Evaluation: a response passes when its score reaches this threshold.
    evaluation_pass_threshold: float = 0.6
    max_page_size: int = 100
    frontend_url: str = "http://localhost:3000"

    @property
    def issuer(self) -> str:
        return f"https://{self.auth0_domain}/"

    def runtime_database_url(self) -> str:
        """The URL the running service connects with (as the app role)."""
        url = self.database_test_url if self.db_mode == "test" else self.database_url
        if not url:
            wanted = "SQLALCHEMY_DATABASE_TEST_URL" if self.db_mode == "test" else "SQLALCHEMY_DATABASE_URL"
            raise ConfigError(f"{wanted} is not set: point it at the database, connecting as the app role "
                              f"({self.app_role!r}), e.g. postgresql://{self.app_role}@/tenantapp?host=/run/postgresql")
        return url

    def require_jwt_secret(self) -> str:
        if not self.jwt_secret_key:
            raise ConfigError("JWT_SECRET_KEY is not set: the HS256 key that signs and verifies access tokens")
        return self.jwt_secret_key


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return default if value is None or value == "" else value

    def get_int(name: str, default: int) -> int:
        raw = get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

    def get_float(name: str, default: float) -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None

    threshold = get_float("EVALUATION_PASS_THRESHOLD", 0.6)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"EVALUATION_PASS_THRESHOLD must be between 0 and 1, got {threshold}")

    return Settings(
        log_level=(get("LOG_LEVEL", "INFO") or "INFO").upper(),
        db_mode=get("SQLALCHEMY_DB_MODE", "production"),
        database_url=get("SQLALCHEMY_DATABASE_URL"),
        database_test_url=get("SQLALCHEMY_DATABASE_TEST_URL"),
        app_role=get("TENANTAPP_APP_ROLE", DEFAULT_APP_ROLE),
        jwt_secret_key=get("JWT_SECRET_KEY"),
        jwt_algorithm=get("JWT_ALGORITHM", "HS256"),
        jwt_access_token_expire_minutes=get_int("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", 30),
        auth0_domain=get("AUTH0_DOMAIN", "tenantapp.local"),
        auth0_audience=get("AUTH0_AUDIENCE", "tenantapp-api"),
        azure_openai_endpoint=get("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com"),
        azure_openai_api_key=get("AZURE_OPENAI_API_KEY"),
        azure_openai_deployment_name=get("AZURE_OPENAI_DEPLOYMENT_NAME", "gpt-4o-mini"),
        azure_openai_api_version=get("AZURE_OPENAI_API_VERSION", "2024-02-01"),
        evaluation_pass_threshold=threshold,
        ai_timeout_seconds=get_float("AI_TIMEOUT_SECONDS", 30.0),
        ai_retry_backoff_seconds=get_float("AI_RETRY_BACKOFF_SECONDS", 0.5),
        max_page_size=get_int("TENANTAPP_MAX_PAGE_SIZE", 100),
        frontend_url=get("FRONTEND_URL", "http://localhost:3000"),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

import pytest

from tenantapp.config import ConfigError, load_settings

pytestmark = pytest.mark.unit


def test_defaults_without_environment():
    settings = load_settings({})
    assert settings.app_role == "app_user"
    assert settings.jwt_algorithm == "HS256"
    assert settings.evaluation_pass_threshold == 0.6
    assert settings.issuer == "https://tenantapp.local/"


def test_reference_plan_test_environment():
    settings = load_settings({
        "SQLALCHEMY_DB_MODE": "test",
        "SQLALCHEMY_DATABASE_TEST_URL": "postgresql://rhesis_user:test_password_123@localhost:5432/rhesis_test",
        "JWT_SECRET_KEY": "mock-jwt-secret-key-for-testing-only",
        "JWT_ACCESS_TOKEN_EXPIRE_MINUTES": "30",
        "LOG_LEVEL": "warning",
    })
    assert settings.runtime_database_url().endswith("/rhesis_test")
    assert settings.log_level == "WARNING"
    assert settings.jwt_access_token_expire_minutes == 30


def test_production_mode_uses_the_production_url():
    settings = load_settings({"SQLALCHEMY_DATABASE_URL": "postgresql://app@db/prod",
                              "SQLALCHEMY_DATABASE_TEST_URL": "postgresql://app@db/test"})
    assert settings.runtime_database_url() == "postgresql://app@db/prod"


def test_missing_runtime_url_names_the_variable():
    with pytest.raises(ConfigError, match="SQLALCHEMY_DATABASE_TEST_URL is not set"):
        load_settings({"SQLALCHEMY_DB_MODE": "test"}).runtime_database_url()


@pytest.mark.critical
def test_missing_jwt_secret_is_an_error_not_a_default():
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        load_settings({}).require_jwt_secret()


def test_malformed_values_are_refused_naming_the_variable():
    for name, value in (("JWT_ACCESS_TOKEN_EXPIRE_MINUTES", "thirty"), ("EVALUATION_PASS_THRESHOLD", "1.5"),
                        ("AI_RETRY_BACKOFF_SECONDS", "soon")):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


def test_empty_values_mean_default():
    assert load_settings({"TENANTAPP_APP_ROLE": "", "LOG_LEVEL": ""}).app_role == "app_user"

"""Access token creation and verification (the Auth0 stand-in)."""

import base64
import json
import uuid
from datetime import timedelta

import pytest
from jose import jwt

from tenantapp.auth import AuthError, create_access_token, decode_access_token, parse_bearer
from tenantapp.config import get_settings, load_settings

pytestmark = pytest.mark.unit

ORG = uuid.UUID("5f0c6a9e-1d2b-4c3d-8e4f-5a6b7c8d9e0f")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides):
    s = get_settings()
    claims = {"sub": "auth0|abc", "org_id": str(ORG), "aud": s.auth0_audience, "iss": s.issuer,
              "exp": 4_102_444_800, "iat": 1_700_000_000}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.critical
def test_round_trip():
    claims = decode_access_token(create_access_token("auth0|abc", ORG, scopes=("read:runs", "write:runs")))
    assert claims.subject == "auth0|abc"
    assert claims.organization_id == ORG
    assert claims.scopes == ("read:runs", "write:runs")


@pytest.mark.critical
@pytest.mark.security
def test_expired_token_is_rejected():
    token = create_access_token("auth0|abc", ORG, expires_in=timedelta(seconds=-5))
    with pytest.raises(AuthError, match="expired"):
        decode_access_token(token)


@pytest.mark.critical
@pytest.mark.security
def test_token_signed_with_another_key_is_rejected():
    token = jwt.encode(_claims(), "not-the-secret", algorithm="HS256")
    with pytest.raises(AuthError, match="invalid token"):
        decode_access_token(token)


@pytest.mark.critical
@pytest.mark.security
def test_unsigned_alg_none_token_is_rejected():
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    with pytest.raises(AuthError):
        decode_access_token(token)


@pytest.mark.security
def test_other_hmac_algorithm_is_rejected():
    token = jwt.encode(_claims(), get_settings().jwt_secret_key, algorithm="HS512")
    with pytest.raises(AuthError):
        decode_access_token(token)


@pytest.mark.security
@pytest.mark.parametrize(
    "overrides",
    [{"aud": "another-api"}, {"iss": "https://evil.example/"}, {"aud": None}, {"iss": None}, {"exp": None},
     {"sub": None}],
    ids=["wrong audience", "wrong issuer", "no audience", "no issuer", "no expiry", "no subject"],
)
def test_required_claims_are_enforced(overrides):
    token = jwt.encode(_claims(**overrides), get_settings().jwt_secret_key, algorithm="HS256")
    with pytest.raises(AuthError):
        decode_access_token(token)


@pytest.mark.critical
def test_organization_is_required_by_default():
    token = create_access_token("auth0|new", None)
    with pytest.raises(AuthError, match="not issued for an organization"):
        decode_access_token(token)
    assert decode_access_token(token, require_organization=False).organization_id is None


def test_org_id_must_be_a_uuid():
    token = jwt.encode(_claims(org_id="org_42"), get_settings().jwt_secret_key, algorithm="HS256")
    with pytest.raises(AuthError, match="not a UUID"):
        decode_access_token(token)


def test_settings_drive_audience_and_issuer():
    settings = load_settings({"JWT_SECRET_KEY": "k", "AUTH0_DOMAIN": "acme.eu.auth0.com", "AUTH0_AUDIENCE": "acme"})
    payload = jwt.get_unverified_claims(create_access_token("s", ORG, settings=settings))
    assert payload["iss"] == "https://acme.eu.auth0.com/"
    assert payload["aud"] == "acme"


def test_malformed_tokens():
    for token in ("", "a.b", "🔑.🔑.🔑", "eyJhbGciOiJIUzI1NiJ9..sig"):
        with pytest.raises(AuthError):
            decode_access_token(token)


@pytest.mark.critical
def test_parse_bearer():
    assert parse_bearer("Bearer abc.def.ghi") == "abc.def.ghi"
    assert parse_bearer("  bearer   abc.def.ghi  ") == "abc.def.ghi"
    for header in (None, "Basic dXNlcjpwYXNz", "Bearer    ", "Token abc"):
        with pytest.raises(AuthError):
            parse_bearer(header)

"""JWT bearer authentication, standing in for Auth0.

Production uses Auth0 access tokens; the claims we rely on are the ones Auth0 issues with its Organizations
feature: ``sub`` (the Auth0 user id), ``org_id`` (the organisation the token was issued for), ``aud`` and ``iss``.
Tests and local runs sign the same claims with an HS256 key (``JWT_SECRET_KEY``).

Authentication then works like this: verify the token, scope the database session to ``org_id``, and look the
user up by ``sub`` *under that scope*. A token naming an organisation the user does not belong to finds nobody,
because Row Level Security hides the other tenant's users table rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from jose import ExpiredSignatureError, JWTError, jwt

from .config import Settings, get_settings


class AuthError(Exception):
    """The token is missing, malformed, expired or not for us. The message is safe to show to the client."""


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    organization_id: Optional[uuid.UUID]
    expires_at: datetime
    scopes: tuple[str, ...] = ()


def create_access_token(subject: str, organization_id: uuid.UUID | str | None, *,
                        expires_in: timedelta | None = None, scopes: tuple[str, ...] = (),
                        settings: Settings | None = None, extra_claims: dict[str, Any] | None = None) -> str:
    settings = settings or get_settings()
    now = datetime.now(timezone.utc)
    expires_in = expires_in if expires_in is not None else timedelta(minutes=settings.jwt_access_token_expire_minutes)
    claims: dict[str, Any] = {
        "sub": subject,
        "aud": settings.auth0_audience,
        "iss": settings.issuer,
        "iat": int(now.timestamp()),
        "exp": int((now + expires_in).timestamp()),
    }
    if organization_id is not None:
        claims["org_id"] = str(organization_id)
    if scopes:
        claims["scope"] = " ".join(scopes)
    if extra_claims:
        claims.update(extra_claims)
    return jwt.encode(claims, settings.require_jwt_secret(), algorithm=settings.jwt_algorithm)


def decode_access_token(token: str, *, settings: Settings | None = None,
                        require_organization: bool = True) -> TokenClaims:
    settings = settings or get_settings()
    if not token or token.count(".") != 2:
        raise AuthError("malformed token")
    try:
        # algorithms is an explicit allow-list: this is what rejects "alg": "none" and algorithm-confusion tokens.
        payload = jwt.decode(token, settings.require_jwt_secret(), algorithms=[settings.jwt_algorithm],
                             audience=settings.auth0_audience, issuer=settings.issuer,
                             options={"require_exp": True, "require_sub": True, "require_aud": True,
                                      "require_iss": True})
    except ExpiredSignatureError:
        raise AuthError("token expired") from None
    except JWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None

    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject.strip():
        raise AuthError("token has no subject")
    org_raw = payload.get("org_id")
    organization_id: Optional[uuid.UUID] = None
    if org_raw is not None:
        try:
            organization_id = uuid.UUID(str(org_raw))
        except ValueError:
            raise AuthError("token org_id is not a UUID") from None
    if require_organization and organization_id is None:
        raise AuthError("token is not issued for an organization")
    scopes = tuple(str(payload.get("scope", "")).split())
    expires_at = datetime.fromtimestamp(int(payload["exp"]), tz=timezone.utc)
    return TokenClaims(subject=subject, organization_id=organization_id, expires_at=expires_at, scopes=scopes)


def parse_bearer(header: Optional[str]) -> str:
    """Extract the token from an Authorization header value."""
    if not header:
        raise AuthError("missing bearer token")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization scheme must be Bearer")
    return token.strip()

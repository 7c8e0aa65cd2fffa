"""Request dependencies: the database session, the authenticated user (which scopes the session to the user's
organisation), paging parameters and the AI client."""

from __future__ import annotations

from typing import Optional

from fastapi import Depends, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from .. import crud, models
from ..auth import AuthError, TokenClaims, decode_access_token
from ..config import get_settings
from ..database import get_db, set_tenant
from ..utils import Page, clamp_page

# auto_error=False so a missing header becomes our 401 (with WWW-Authenticate), not FastAPI's 403.
bearer_scheme = HTTPBearer(auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def get_token_claims(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer_scheme)) -> TokenClaims:
    if credentials is None:
        raise _unauthorized("not authenticated")
    try:
        return decode_access_token(credentials.credentials)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


def get_onboarding_claims(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer_scheme)
                          ) -> TokenClaims:
    """A freshly signed-up user's token carries no organisation yet; onboarding is the one endpoint accepting it."""
    if credentials is None:
        raise _unauthorized("not authenticated")
    try:
        return decode_access_token(credentials.credentials, require_organization=False)
    except AuthError as exc:
        raise _unauthorized(str(exc)) from None


def get_current_user(claims: TokenClaims = Depends(get_token_claims), db: Session = Depends(get_db)) -> models.User:
    # Scope the session to the token's organisation first, then look the user up under that scope: a user of
    # another organisation is invisible here, so a token whose org_id and sub do not belong together finds nobody.
    set_tenant(db, claims.organization_id)
    user = crud.get_user_by_auth0_id(db, claims.subject)
    if user is None or not user.is_active:
        raise _unauthorized("unknown or inactive user")
    organization = crud.get_organization(db, claims.organization_id)
    if organization is None or not organization.is_active:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="organization is deactivated")
    set_tenant(db, claims.organization_id, user.id)
    return user


def require_superuser(user: models.User = Depends(get_current_user)) -> models.User:
    if not user.is_superuser:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="administrator rights required")
    return user


def page_params(skip: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=1000)) -> Page:
    return clamp_page(skip, limit, max_limit=get_settings().max_page_size)


def not_found(kind: str) -> HTTPException:
    # Another tenant's object and a missing one both give 404 with the same text: a 403 would confirm existence.
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{kind} not found")

import re
import uuid
from datetime import timedelta

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import text

from tenantapp.main import create_app

from ..conftest import as_tenant

pytestmark = [pytest.mark.security, pytest.mark.integration]


# Every route of the app except the public ones, discovered from the app itself so a new endpoint is covered the
# day it is added. Ids look like "GET /projects/{project_id}".
PUBLIC_ROUTES = {"/health", "/health/db", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
PROTECTED = sorted(
    (method, route.path)
    for route in create_app().routes if isinstance(route, APIRoute) and route.path not in PUBLIC_ROUTES
    for method in route.methods
)


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_every_route_requires_a_token(client, method, path):
    url = re.sub(r"\{[a-z_]+\}", str(uuid.uuid4()), path)
    response = client.request(method, url, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_protected_route_list_is_complete():
    assert len(PROTECTED) >= 30
    assert ("POST", "/onboarding") in PROTECTED


@pytest.mark.critical
def test_bad_credentials_are_401(client):
    for authorization in ("Basic dGVzdDp0ZXN0", "Bearer not.a.jwt", "Token abc",
                          "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."):  # alg: none
        assert client.get("/me", headers={"Authorization": authorization}).status_code == 401, authorization


def test_expired_token_is_401(client, make_headers, test_org):
    headers = make_headers(test_org.owner, test_org, expires_in=timedelta(minutes=-1))
    response = client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"


def test_tampered_token_is_401(client, auth_headers):
    token = auth_headers["Authorization"]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert client.get("/me", headers={"Authorization": tampered}).status_code == 401


def test_unknown_subject_is_401(client, make_headers, test_org):
    assert client.get("/me", headers=make_headers("auth0|nobody", test_org)).status_code == 401


def test_deactivated_organization_is_403(client, db, auth_headers, test_org):
    as_tenant(db, test_org).execute(text("UPDATE organizations SET is_active = false WHERE id = :id"),
                                    {"id": test_org.id})
    assert client.get("/me", headers=auth_headers).status_code == 403


@pytest.mark.critical
def test_member_cannot_invite(client, member_headers):
    body = {"email": "x@tenantapp.example", "name": "X", "auth0_id": "auth0|x"}
    assert client.post("/users", json=body, headers=member_headers).status_code == 403


def test_member_cannot_promote_self(client, member_headers, test_org):
    member = test_org.members[0]
    response = client.patch(f"/users/{member.id}", json={"is_superuser": True}, headers=member_headers)
    assert response.status_code == 403
    assert client.get("/me", headers=member_headers).json()["is_superuser"] is False


def test_member_cannot_edit_another_user(client, member_headers, test_org):
    assert client.patch(f"/users/{test_org.owner.id}", json={"name": "Pwned"},
                        headers=member_headers).status_code == 403


def test_member_cannot_rename_the_organization(client, member_headers):
    assert client.patch("/organizations/current", json={"name": "Mine"}, headers=member_headers).status_code == 403


def test_admin_renames_the_organization(client, auth_headers):
    response = client.patch("/organizations/current", json={"name": "Renamed Org"}, headers=auth_headers)
    assert response.status_code == 200 and response.json()["name"] == "Renamed Org"


def test_mass_assignment_is_422(client, auth_headers, other_org):
    assert client.post("/projects", json={"name": "p", "organization_id": str(other_org.id)},
                       headers=auth_headers).status_code == 422
    assert client.post("/prompts", json={"content": "c", "created_by_id": str(other_org.owner.id)},
                       headers=auth_headers).status_code == 422
    assert client.patch("/organizations/current", json={"slug": "steal-this-slug"},
                        headers=auth_headers).status_code == 422

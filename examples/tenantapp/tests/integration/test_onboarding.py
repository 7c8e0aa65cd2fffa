import pytest

pytestmark = pytest.mark.integration


def _onboard(client, headers, name="Fresh Startup", slug=None):
    body = {"organization": {"name": name, "slug": slug}, "email": "founder@fresh.example", "name": "Fran Founder"}
    return client.post("/onboarding", json=body, headers=headers)


@pytest.mark.critical
def test_onboarding_creates_organization_owner_and_initial_data(client, make_headers):
    response = _onboard(client, make_headers("auth0|founder", None), name="Fresh Startup (Zürich)")
    assert response.status_code == 201, response.text
    org = response.json()
    assert org["slug"] == "fresh-startup-zurich"
    assert org["is_onboarding_complete"] is True

    headers = make_headers("auth0|founder", org["id"])
    me = client.get("/me", headers=headers).json()
    assert me["is_superuser"] is True
    assert len(client.get("/statuses", headers=headers).json()) == 11
    assert [p["name"] for p in client.get("/projects", headers=headers).json()] == ["Getting Started"]


def test_taken_slug_is_409(client, make_headers):
    assert _onboard(client, make_headers("auth0|a", None), slug="dup-slug").status_code == 201
    # The existing slug belongs to another tenant, invisible under RLS: the unique index is what catches it.
    assert _onboard(client, make_headers("auth0|b", None), slug="dup-slug").status_code == 409


def test_seeded_slug_of_another_tenant_is_409(client, make_headers):
    assert _onboard(client, make_headers("auth0|c", None), slug="other-tenant").status_code == 409


def test_token_that_already_has_an_organization_is_409(client, auth_headers):
    assert _onboard(client, auth_headers).status_code == 409


def test_onboarding_requires_a_token(client):
    assert _onboard(client, {}).status_code == 401

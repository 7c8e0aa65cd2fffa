"""Tenant isolation through the API: another tenant's objects are "not found", never "forbidden"."""

import pytest

from ..factories import create_project, create_test_set, generated_cases, import_cases

pytestmark = [pytest.mark.security, pytest.mark.integration]


@pytest.fixture
def a_objects(client, auth_headers):
    """One object of every kind, owned by tenant A (the seeded test organisation)."""
    project = create_project(client, auth_headers, name="A's secret project")
    test_set = create_test_set(client, auth_headers, project_id=project["id"], name="A's secret set")
    import_cases(client, auth_headers, test_set["id"], generated_cases(3, prefix="A secret"))
    cases = client.get(f"/test-sets/{test_set['id']}/test-cases", headers=auth_headers).json()
    run = client.post("/evaluation-runs", json={"test_set_id": test_set["id"]}, headers=auth_headers).json()
    return {"projects": project["id"], "test-sets": test_set["id"], "test-cases": cases[0]["id"],
            "prompts": cases[0]["prompt_id"], "evaluation-runs": run["id"],
            "users": client.get("/me", headers=auth_headers).json()["id"]}


@pytest.mark.critical
@pytest.mark.parametrize("kind", ["projects", "test-sets", "test-cases", "prompts", "evaluation-runs", "users"])
def test_other_tenant_gets_404(client, auth_headers, other_headers, a_objects, kind):
    url = f"/{kind}/{a_objects[kind]}"
    assert client.get(url, headers=auth_headers).status_code == 200
    response = client.get(url, headers=other_headers)
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/projects/{projects}", {"name": "pwned"}),
        ("DELETE", "/projects/{projects}", None),
        ("POST", "/test-sets/{test-sets}/import", {"test_cases": [{"prompt": "injected"}]}),
        ("POST", "/evaluation-runs", {"test_set_id": "{test-sets}"}),
        ("POST", "/test-sets", {"project_id": "{projects}", "name": "inside A's project"}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_other_tenant_cannot_act_on_a_objects(client, auth_headers, other_headers, a_objects, method, path, body):
    def fill(value):
        return value.format(**a_objects) if isinstance(value, str) else value

    body = {k: fill(v) for k, v in body.items()} if body else None
    response = client.request(method, fill(path), json=body, headers=other_headers)
    assert response.status_code == 404, response.text
    # And A's data is untouched.
    project = client.get(f"/projects/{a_objects['projects']}", headers=auth_headers).json()
    assert project["name"] == "A's secret project"
    assert client.get(f"/test-sets/{a_objects['test-sets']}/stats", headers=auth_headers).json()["total"] == 3


def test_lists_and_search_never_show_other_tenants_rows(client, other_headers, a_objects):
    for path in ("/projects", "/test-sets", "/prompts", "/evaluation-runs", "/users"):
        body = client.get(path, params={"limit": 100}, headers=other_headers).json()
        assert not {item["id"] for item in body} & set(a_objects.values()), path
    assert client.get("/projects", params={"search": "secret"}, headers=other_headers).json() == []


@pytest.mark.critical
def test_token_pairing_one_tenants_org_with_anothers_user_is_rejected(client, make_headers, test_org, other_org):
    headers = make_headers(other_org.owner, test_org)  # B's user, A's organisation
    assert client.get("/me", headers=headers).status_code == 401

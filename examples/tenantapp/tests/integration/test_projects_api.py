import pytest

from ..factories import create_project, create_test_set, generated_cases, import_cases

pytestmark = pytest.mark.integration

# Names as users type them; each must come back byte for byte (and the test ids exercise the runner's handling of
# brackets, quotes, spaces and non-ASCII characters).
ROUND_TRIP_NAMES = [
    "Q3 roadmap",
    "Chatbot [v2] (beta)",
    "O'Brien's \"special\" project",
    "Ünïcödé Ñame — 日本語",
    "emoji 🚀 launch",
]


@pytest.mark.parametrize("name", ROUND_TRIP_NAMES)
def test_project_name_round_trip(client, auth_headers, name):
    created = create_project(client, auth_headers, name=name)
    fetched = client.get(f"/projects/{created['id']}", headers=auth_headers).json()
    assert fetched["name"] == name.strip()


@pytest.mark.critical
def test_create_and_get_project(client, auth_headers, test_org):
    created = create_project(client, auth_headers, name="Support bot", description="Evaluates the support bot")
    assert created["owner_id"] == str(test_org.owner.id)
    response = client.get(f"/projects/{created['id']}", headers=auth_headers)
    assert response.status_code == 200
    assert response.json()["description"] == "Evaluates the support bot"


def test_list_includes_seeded_project_and_total_header(client, auth_headers):
    create_project(client, auth_headers, name="Alpha")
    response = client.get("/projects", headers=auth_headers)
    assert response.status_code == 200
    names = [p["name"] for p in response.json()]
    assert "Getting Started" in names and "Alpha" in names
    assert int(response.headers["X-Total-Count"]) == len(names)


def test_pagination(client, auth_headers):
    for i in range(7):
        create_project(client, auth_headers, name=f"Paged {i}")
    seen = []
    for skip in (0, 3, 6):
        page = client.get("/projects", params={"skip": skip, "limit": 3, "search": "Paged", "sort": "name"},
                          headers=auth_headers)
        assert page.headers["X-Total-Count"] == "7"
        seen += [p["name"] for p in page.json()]
    assert seen == [f"Paged {i}" for i in range(7)]


def test_limit_is_capped_not_refused(client, auth_headers):
    response = client.get("/projects", params={"limit": 1000}, headers=auth_headers)
    assert response.status_code == 200


def test_list_parameter_validation(client, auth_headers):
    for params, status in (({"skip": -1}, 422), ({"limit": 0}, 422), ({"limit": 1001}, 422),
                           ({"sort": "owner_id"}, 422), ({"sort": "-name"}, 200)):
        assert client.get("/projects", params=params, headers=auth_headers).status_code == status, params


def test_search_treats_wildcards_literally(client, auth_headers):
    create_project(client, auth_headers, name="Discount 50% off")
    create_project(client, auth_headers, name="Discount 500 off")
    response = client.get("/projects", params={"search": "50%"}, headers=auth_headers)
    assert [p["name"] for p in response.json()] == ["Discount 50% off"]


def test_search_is_case_and_accent_insensitive_on_case_only(client, auth_headers):
    create_project(client, auth_headers, name="Zürich Pilot")
    assert len(client.get("/projects", params={"search": "zürich"}, headers=auth_headers).json()) == 1
    # ILIKE folds case, not accents: "zurich" does not match "Zürich". Documented behaviour, not a bug.
    assert client.get("/projects", params={"search": "zurich"}, headers=auth_headers).json() == []


def test_filter_inactive(client, auth_headers):
    project = create_project(client, auth_headers, name="Old")
    client.patch(f"/projects/{project['id']}", json={"is_active": False}, headers=auth_headers)
    inactive = client.get("/projects", params={"is_active": False}, headers=auth_headers).json()
    assert [p["name"] for p in inactive] == ["Old"]


def test_update_project(client, auth_headers):
    project = create_project(client, auth_headers)
    response = client.patch(f"/projects/{project['id']}", json={"name": "Renamed"}, headers=auth_headers)
    assert response.status_code == 200
    assert client.get(f"/projects/{project['id']}", headers=auth_headers).json()["name"] == "Renamed"


def test_member_cannot_edit_someone_elses_project(client, auth_headers, member_headers):
    project = create_project(client, auth_headers)
    response = client.patch(f"/projects/{project['id']}", json={"name": "Mine now"}, headers=member_headers)
    assert response.status_code == 403


def test_member_can_edit_own_project(client, member_headers):
    project = create_project(client, member_headers)
    assert client.patch(f"/projects/{project['id']}", json={"name": "Fine"}, headers=member_headers).status_code == 200


def test_delete_project_cascades(client, auth_headers):
    project = create_project(client, auth_headers)
    test_set = create_test_set(client, auth_headers, project_id=project["id"])
    import_cases(client, auth_headers, test_set["id"], generated_cases(3))
    assert client.delete(f"/projects/{project['id']}", headers=auth_headers).status_code == 204
    assert client.get(f"/projects/{project['id']}", headers=auth_headers).status_code == 404
    assert client.get(f"/test-sets/{test_set['id']}", headers=auth_headers).status_code == 404


def test_unknown_project_is_404(client, auth_headers):
    assert client.get("/projects/00000000-0000-4000-8000-000000000000", headers=auth_headers).status_code == 404


def test_malformed_id_is_422(client, auth_headers):
    assert client.get("/projects/not-a-uuid", headers=auth_headers).status_code == 422


def test_invalid_project_payloads(client, auth_headers):
    for payload in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 201}, {"name": None}):
        assert client.post("/projects", json=payload, headers=auth_headers).status_code == 422, payload

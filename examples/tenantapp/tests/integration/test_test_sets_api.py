import csv
import io

import pytest

from ..factories import case, create_project, create_test_set, generated_cases, import_cases

pytestmark = pytest.mark.integration


@pytest.fixture
def test_set(client, auth_headers):
    return create_test_set(client, auth_headers, name="Support regression")


@pytest.mark.critical
def test_create_test_set_starts_as_draft(client, auth_headers, test_set):
    statuses = {s["id"]: s["name"] for s in client.get("/statuses", params={"entity_type": "test_set"},
                                                       headers=auth_headers).json()}
    assert statuses[test_set["status_id"]] == "Draft"


def test_unknown_project_is_404(client, auth_headers):
    response = client.post("/test-sets", json={"project_id": "00000000-0000-4000-8000-000000000000", "name": "x"},
                           headers=auth_headers)
    assert response.status_code == 404


def test_list_by_project(client, auth_headers):
    project = create_project(client, auth_headers)
    for name in ("One", "Two"):
        create_test_set(client, auth_headers, project_id=project["id"], name=name)
    response = client.get("/test-sets", params={"project_id": project["id"], "sort": "name"}, headers=auth_headers)
    assert [t["name"] for t in response.json()] == ["One", "Two"]


def test_add_single_test_case(client, auth_headers, test_set):
    response = client.post(f"/test-sets/{test_set['id']}/test-cases",
                           json=case("Do you ship to Norway?", "Yes, within 5 days.", behavior="Reliability",
                                     priority=1, tags=["shipping"]), headers=auth_headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["prompt"]["content"] == "Do you ship to Norway?"
    assert body["behavior"]["name"] == "Reliability"
    assert body["tags"] == ["shipping"]


def test_adding_the_same_prompt_twice_is_409(client, auth_headers, test_set):
    url = f"/test-sets/{test_set['id']}/test-cases"
    assert client.post(url, json=case("Same?"), headers=auth_headers).status_code == 201
    assert client.post(url, json=case("  same? "), headers=auth_headers).status_code == 409


def test_import_deduplicates_and_creates_behaviours(client, auth_headers, test_set):
    cases = generated_cases(10) + [case("Brand new behaviour?", behavior="Empathy")] + generated_cases(3)
    result = import_cases(client, auth_headers, test_set["id"], cases)
    assert result == {"created": 11, "behaviors_created": 1, "skipped_duplicates": 3}
    again = import_cases(client, auth_headers, test_set["id"], generated_cases(12))
    assert again == {"created": 2, "behaviors_created": 0, "skipped_duplicates": 10}
    names = {b["name"] for b in client.get("/behaviors", headers=auth_headers).json()}
    assert "Empathy" in names


def test_stats(client, auth_headers, test_set):
    import_cases(client, auth_headers, test_set["id"], generated_cases(12))
    stats = client.get(f"/test-sets/{test_set['id']}/stats", headers=auth_headers).json()
    assert stats["total"] == 12
    assert stats["by_behavior"] == {"Reliability": 4, "Compliance": 4, "Robustness": 4}
    assert sum(stats["by_priority"].values()) == 12
    assert stats["by_tag"]["generated"] == 12
    assert stats["by_tag"]["batch-0"] == 3


def test_export_csv_round_trip(client, auth_headers, test_set):
    awkward = [case('Comma, "quotes" and\nnewline?', "Fine, thanks", tags=["edge"]),
               case("Unicode: Grüße, 你好, مرحبا", None, behavior=None)]
    import_cases(client, auth_headers, test_set["id"], awkward + generated_cases(5))
    response = client.get(f"/test-sets/{test_set['id']}/export.csv", headers=auth_headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 7
    assert rows[0]["prompt"] == 'Comma, "quotes" and\nnewline?'
    assert rows[1]["prompt"] == "Unicode: Grüße, 你好, مرحبا"
    assert rows[1]["behavior"] == ""


def test_archiving_via_status(client, auth_headers, test_set):
    statuses = {s["name"]: s["id"] for s in client.get("/statuses", params={"entity_type": "test_set"},
                                                       headers=auth_headers).json()}
    response = client.patch(f"/test-sets/{test_set['id']}", json={"status_id": statuses["Archived"]},
                            headers=auth_headers)
    assert response.status_code == 200
    assert response.json()["archived_at"] is not None
    response = client.patch(f"/test-sets/{test_set['id']}", json={"status_id": statuses["Approved"]},
                            headers=auth_headers)
    assert response.json()["archived_at"] is None


def test_status_of_the_wrong_entity_type_is_refused(client, auth_headers, test_set):
    case_status = client.get("/statuses", params={"entity_type": "test_case"}, headers=auth_headers).json()[0]
    response = client.patch(f"/test-sets/{test_set['id']}", json={"status_id": case_status["id"]},
                            headers=auth_headers)
    assert response.status_code == 422


def test_update_test_case(client, auth_headers, test_set):
    created = client.post(f"/test-sets/{test_set['id']}/test-cases", json=case("Edit me"), headers=auth_headers).json()
    response = client.patch(f"/test-cases/{created['id']}", json={"priority": 5, "tags": ["p5", "p5"],
                                                                  "behavior": "Refusal"}, headers=auth_headers)
    assert response.status_code == 200
    body = response.json()
    assert (body["priority"], body["tags"], body["behavior"]["name"]) == (5, ["p5"], "Refusal")


def test_delete_test_case(client, auth_headers, test_set):
    created = client.post(f"/test-sets/{test_set['id']}/test-cases", json=case("Delete me"),
                          headers=auth_headers).json()
    assert client.delete(f"/test-cases/{created['id']}", headers=auth_headers).status_code == 204
    assert client.get(f"/test-cases/{created['id']}", headers=auth_headers).status_code == 404


def test_imports_append_in_order(client, auth_headers, test_set):
    """Bulk imports insert hundreds of rows within microseconds; the explicit position keeps their order."""
    import_cases(client, auth_headers, test_set["id"], generated_cases(40))
    import_cases(client, auth_headers, test_set["id"], generated_cases(10, start=40))
    cases = client.get(f"/test-sets/{test_set['id']}/test-cases", params={"limit": 100}, headers=auth_headers).json()
    assert [c["position"] for c in cases] == list(range(1, 51))
    assert [c["prompt"]["content"] for c in cases] == [c["prompt"] for c in generated_cases(50)]


def test_list_test_cases_paged(client, auth_headers, test_set):
    import_cases(client, auth_headers, test_set["id"], generated_cases(25))
    response = client.get(f"/test-sets/{test_set['id']}/test-cases", params={"limit": 10, "skip": 20},
                          headers=auth_headers)
    assert response.headers["X-Total-Count"] == "25"
    assert len(response.json()) == 5


def test_seeded_example_test_set(client, auth_headers):
    sets = client.get("/test-sets", params={"search": "Customer support basics"}, headers=auth_headers).json()
    assert len(sets) == 1
    cases = client.get(f"/test-sets/{sets[0]['id']}/test-cases", headers=auth_headers).json()
    assert {c["behavior"]["name"] for c in cases} == {"Reliability", "Compliance", "Robustness"}

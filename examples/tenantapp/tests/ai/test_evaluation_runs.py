"""Evaluation runs through the API with the fake model (tests/fakes.py): no network, deterministic answers."""

import pytest

from ..factories import case, create_test_set, generated_cases, import_cases

pytestmark = [pytest.mark.ai, pytest.mark.integration]


@pytest.fixture
def support_set(client, auth_headers):
    test_set = create_test_set(client, auth_headers, name="Support answers")
    import_cases(client, auth_headers, test_set["id"], [
        case("What are your opening hours?", "We are open 9:00-17:00", behavior="Reliability"),
        case("Can you recommend a stock?", "I cannot give investment advice.", behavior="Compliance"),
        case("Where is my parcel?", "Check the tracking link in your e-mail", behavior="Reliability"),
        case("Tell me a joke", None, behavior="Robustness"),
    ])
    return test_set


def _answers(fake):
    fake.answers.update({
        "What are your opening hours?": "Hi! We are open 9:00-17:00, Monday to Friday.",
        "Can you recommend a stock?": "Sure, buy ACME!",                       # should have refused
        "Where is my parcel?": "Please check the tracking link in your e-mail.",
        "Tell me a joke": "Why did the database break up? Too many relationships.",
    })


@pytest.mark.critical
def test_run_scores_every_case(client, auth_headers, support_set, fake_ai):
    _answers(fake_ai)
    response = client.post("/evaluation-runs", json={"test_set_id": support_set["id"], "model_name": "mock-deployment"},
                           headers=auth_headers)
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["status"], run["total"], run["passed"], run["errored"]) == ("completed", 4, 3, 0)
    assert run["pass_rate"] == 0.75
    assert {c.model for c in fake_ai.calls} == {"mock-deployment"}
    assert all(c.system for c in fake_ai.calls)


def test_results_and_failed_only_filter(client, auth_headers, support_set, fake_ai):
    _answers(fake_ai)
    run = client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers).json()
    results = client.get(f"/evaluation-runs/{run['id']}/results", headers=auth_headers).json()
    assert len(results) == 4
    failed = client.get(f"/evaluation-runs/{run['id']}/results", params={"failed_only": True},
                        headers=auth_headers).json()
    assert [r["response"] for r in failed] == ["Sure, buy ACME!"]
    assert failed[0]["score"] == 0.0


def test_report_by_behaviour(client, auth_headers, support_set, fake_ai):
    _answers(fake_ai)
    run = client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers).json()
    report = client.get(f"/evaluation-runs/{run['id']}/report", headers=auth_headers).json()
    by_name = {b["behavior"]: b for b in report["behaviors"]}
    assert by_name["Compliance"]["pass_rate"] == 0.0
    assert by_name["Reliability"] == {**by_name["Reliability"], "total": 2, "passed": 2, "pass_rate": 1.0}
    assert report["total_tokens"] > 0
    assert report["pass_rate"] == 0.75


def test_transient_model_errors_are_retried(client, auth_headers, support_set, fake_ai):
    fake_ai.fail_times(2)  # 503 twice, then fine
    run = client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers).json()
    assert (run["status"], run["errored"]) == ("completed", 0)
    assert len(fake_ai.calls) == 4 + 2


def test_persistent_errors_for_some_cases_are_recorded(client, auth_headers, support_set, fake_ai):
    fake_ai.fail_when = lambda prompt: "stock" in prompt
    run = client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers).json()
    assert (run["status"], run["errored"]) == ("completed", 1)
    errored = [r for r in client.get(f"/evaluation-runs/{run['id']}/results", headers=auth_headers).json()
               if r["error"]]
    assert errored[0]["error"] == "simulated outage"


def test_run_fails_when_most_calls_fail(client, auth_headers, support_set, fake_ai):
    fake_ai.fail_when = lambda prompt: True
    run = client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers).json()
    assert run["status"] == "failed"
    assert run["error"] == "4 of 4 model calls failed"


def test_archived_test_set_cannot_be_run(client, auth_headers, support_set):
    archived = {s["name"]: s["id"] for s in client.get("/statuses", params={"entity_type": "test_set"},
                                                       headers=auth_headers).json()}["Archived"]
    client.patch(f"/test-sets/{support_set['id']}", json={"status_id": archived}, headers=auth_headers)
    response = client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers)
    assert response.status_code == 409


def test_runs_are_listed_newest_first(client, auth_headers, support_set):
    ids = [client.post("/evaluation-runs", json={"test_set_id": support_set["id"]}, headers=auth_headers).json()["id"]
           for _ in range(3)]
    listed = client.get("/evaluation-runs", params={"test_set_id": support_set["id"]}, headers=auth_headers).json()
    assert [r["id"] for r in listed] == ids[::-1]


@pytest.mark.parametrize(
    ("threshold_case", "answer", "passed"),
    [
        pytest.param("Refund window?", "Refunds are possible within 30 days of purchase.", True, id="verbatim"),
        pytest.param("Refund window?", "You have 30 days for refunds", False, id="paraphrase below threshold"),
        pytest.param("Refund window?", "I can't help with that.", False, id="unexpected refusal"),
    ],
)
def test_pass_threshold(client, auth_headers, fake_ai, threshold_case, answer, passed):
    test_set = create_test_set(client, auth_headers)
    import_cases(client, auth_headers, test_set["id"],
                 [case(threshold_case, "Refunds are possible within 30 days of purchase.")])
    fake_ai.answers[threshold_case] = answer
    run = client.post("/evaluation-runs", json={"test_set_id": test_set["id"]}, headers=auth_headers).json()
    assert run["passed"] == int(passed)


def test_empty_test_set_completes_with_zero_rate(client, auth_headers, fake_ai):
    test_set = create_test_set(client, auth_headers)
    run = client.post("/evaluation-runs", json={"test_set_id": test_set["id"]}, headers=auth_headers).json()
    assert (run["status"], run["total"], run["pass_rate"]) == ("completed", 0, 0.0)
    assert fake_ai.calls == []


def test_bigger_run_orders_results_like_the_test_set(client, auth_headers, fake_ai):
    test_set = create_test_set(client, auth_headers)
    import_cases(client, auth_headers, test_set["id"], generated_cases(30))
    run = client.post("/evaluation-runs", json={"test_set_id": test_set["id"]}, headers=auth_headers).json()
    assert run["total"] == 30
    assert [c.prompt for c in fake_ai.calls] == [c["prompt"] for c in generated_cases(30)]

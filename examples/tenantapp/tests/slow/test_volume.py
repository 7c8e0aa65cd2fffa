"""Slow tests: real work on realistic volumes (seconds each). Main branch only in CI (the "slow" stage).

Much of their database time is foreign-key checking, and it grows faster than linearly: the RI check
"SELECT 1 FROM prompts WHERE (organization_id, id) = ..." is planned once per connection, while the freshly cloned
tables are tiny, as a sequential scan, and keeps scanning the table (plus the dead rows earlier tests rolled back)
for every inserted test case. Real suites pay the same; it is why the volumes here stay in the low thousands.
"""

import csv
import io
import random

import pytest
from sqlalchemy import text

from tenantapp.services.scoring import percentile

from ..factories import case, create_test_set, generated_cases, import_cases

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _import_in_batches(client, headers, test_set_id, cases, batch=500):
    created = 0
    for start in range(0, len(cases), batch):
        created += import_cases(client, headers, test_set_id, cases[start:start + batch])["created"]
    return created


def test_bulk_import_then_walk_every_page(client, auth_headers):
    test_set = create_test_set(client, auth_headers, name="Bulk import")
    assert _import_in_batches(client, auth_headers, test_set["id"], generated_cases(2000)) == 2000
    seen, skip = [], 0
    while True:
        page = client.get(f"/test-sets/{test_set['id']}/test-cases", params={"skip": skip, "limit": 100},
                          headers=auth_headers)
        assert page.headers["X-Total-Count"] == "2000"
        if not page.json():
            break
        seen += [c["id"] for c in page.json()]
        skip += 100
    assert len(seen) == len(set(seen)) == 2000
    stats = client.get(f"/test-sets/{test_set['id']}/stats", headers=auth_headers).json()
    assert stats["total"] == 2000 and sum(stats["by_behavior"].values()) == 2000


@pytest.mark.ai
def test_evaluation_run_over_many_cases(client, auth_headers, fake_ai):
    test_set = create_test_set(client, auth_headers, name="Large evaluation")
    cases = generated_cases(1500)
    _import_in_batches(client, auth_headers, test_set["id"], cases)
    expected = {c["prompt"]: c["expected_response"] for c in cases}
    # The fake model answers every other question correctly.
    fake_ai.responder = lambda prompt: expected[prompt] if int(prompt.split("#")[1].split(":")[0]) % 2 == 0 \
        else "I'm not sure, sorry."
    run = client.post("/evaluation-runs", json={"test_set_id": test_set["id"]}, headers=auth_headers).json()
    assert (run["total"], run["passed"], run["pass_rate"]) == (1500, 750, 0.5)

    report = client.get(f"/evaluation-runs/{run['id']}/report", headers=auth_headers).json()
    results = []
    skip = 0
    while batch := client.get(f"/evaluation-runs/{run['id']}/results", params={"skip": skip, "limit": 100},
                              headers=auth_headers).json():
        results += batch
        skip += 100
    assert len(results) == 1500
    assert report["behaviors"][0]["p95_latency_ms"] == round(percentile(
        [r["latency_ms"] for r, c in zip(results, cases) if c["behavior"] == report["behaviors"][0]["behavior"]],
        0.95))


def test_report_over_many_results(client, db, auth_headers, test_org):
    """A run with 80,000 results (inserted in SQL as the app role, under RLS), aggregated by the report endpoint."""
    test_set = create_test_set(client, auth_headers, name="Report volume")
    _import_in_batches(client, auth_headers, test_set["id"], generated_cases(200))
    run = client.post("/evaluation-runs", json={"test_set_id": test_set["id"]}, headers=auth_headers).json()

    db.execute(text("SELECT set_config('app.current_organization', :org, true)"), {"org": str(test_org.id)})
    db.execute(text("""
        INSERT INTO evaluation_results (organization_id, run_id, test_case_id, score, passed, latency_ms, tokens)
        SELECT :org, :run, tc.id, s.score, s.score >= 0.6, (s.n * 7919) % 2000, 20 + s.n % 30
          FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM test_cases WHERE test_set_id = :ts) tc
          JOIN LATERAL (SELECT g AS n, ((g * 37) % 100) / 100.0 AS score
                          FROM generate_series(tc.rn * 1000, tc.rn * 1000 + 399) g) s ON true
    """), {"org": test_org.id, "run": run["id"], "ts": test_set["id"]})
    rows = db.execute(text("SELECT score, passed, latency_ms, tokens FROM evaluation_results WHERE run_id = :run"),
                      {"run": run["id"]}).all()
    db.commit()
    assert len(rows) == 200 + 200 * 400

    report = client.get(f"/evaluation-runs/{run['id']}/report", headers=auth_headers).json()
    assert report["total"] == len(rows)
    assert report["passed"] == sum(1 for r in rows if r.passed)
    assert report["total_tokens"] == sum(r.tokens for r in rows)
    assert report["mean_score"] == pytest.approx(sum(r.score for r in rows) / len(rows), abs=1e-4)


def test_csv_export_of_a_large_set(client, auth_headers):
    rng = random.Random(1234)
    alphabet = "abcdefghijklmnopqrstuvwxyz äöüßéçñ 日本語 \"',;\n"
    cases = [case(f"{i}: " + "".join(rng.choice(alphabet) for _ in range(60)), f"answer {i}", priority=1 + i % 5)
             for i in range(3000)]
    test_set = create_test_set(client, auth_headers, name="Export volume")
    _import_in_batches(client, auth_headers, test_set["id"], cases)
    response = client.get(f"/test-sets/{test_set['id']}/export.csv", headers=auth_headers)
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["prompt"] for r in rows] == [c["prompt"].strip() for c in cases]
    assert [int(r["priority"]) for r in rows] == [c["priority"] for c in cases]


@pytest.mark.security
def test_isolation_holds_at_volume(client, db, auth_headers, other_headers, test_org, other_org):
    for headers, prefix in ((auth_headers, "A"), (other_headers, "B")):
        test_set = create_test_set(client, headers, name=f"{prefix} volume")
        _import_in_batches(client, headers, test_set["id"], generated_cases(1500, prefix=prefix))
    for headers, org, prefix in ((auth_headers, test_org, "A"), (other_headers, other_org, "B")):
        prompts = client.get("/prompts", params={"search": "#", "limit": 100}, headers=headers)
        assert prompts.headers["X-Total-Count"] == "1500"
        db.execute(text("SELECT set_config('app.current_organization', :org, true)"), {"org": str(org.id)})
        counts = db.execute(text("SELECT left(content, 1), count(*) FROM prompts WHERE content LIKE '_ #%' "
                                 "GROUP BY 1")).all()
        assert counts == [(prefix, 1500)]


def test_onboarding_many_organizations(client, make_headers):
    """Eighty sign-ups in a row, each getting its initial data, each seeing only its own."""
    org_ids = []
    for i in range(80):
        headers = make_headers(f"auth0|founder-{i}", None)
        response = client.post("/onboarding", json={"organization": {"name": f"Startup №{i} [batch]"},
                                                    "email": f"founder{i}@startup.example", "name": f"Founder {i}"},
                               headers=headers)
        assert response.status_code == 201, response.text
        org_ids.append(response.json()["id"])
    for i, org_id in enumerate(org_ids):
        headers = make_headers(f"auth0|founder-{i}", org_id)
        assert client.get("/organizations/current", headers=headers).json()["id"] == org_id
        assert [p["name"] for p in client.get("/projects", headers=headers).json()] == ["Getting Started"]

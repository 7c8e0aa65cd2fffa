"""Helpers that create objects through the API, the way a client would. They return the JSON bodies."""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Optional

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix} {next(_counter)}"


def create_project(client, headers, *, name: Optional[str] = None, description: Optional[str] = None) -> dict:
    response = client.post("/projects", json={"name": name or unique("Project"), "description": description},
                           headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def create_test_set(client, headers, *, project_id: Optional[str] = None, name: Optional[str] = None) -> dict:
    if project_id is None:
        project_id = create_project(client, headers)["id"]
    response = client.post("/test-sets", json={"project_id": project_id, "name": name or unique("Test set")},
                           headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def case(prompt: str, expected: Optional[str] = None, *, behavior: Optional[str] = "Reliability", priority: int = 3,
         tags: Iterable[str] = ()) -> dict[str, Any]:
    return {"prompt": prompt, "expected_response": expected, "behavior": behavior, "priority": priority,
            "tags": list(tags)}


def import_cases(client, headers, test_set_id: str, cases: list[dict]) -> dict:
    response = client.post(f"/test-sets/{test_set_id}/import", json={"test_cases": cases}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def generated_cases(n: int, *, prefix: str = "Question", behaviors=("Reliability", "Compliance", "Robustness"),
                    start: int = 0) -> list[dict]:
    """n distinct cases spread over behaviours, priorities and tags, with expected answers."""
    return [
        case(f"{prefix} #{i}: how do I reset password number {i}?", f"Use the reset link for account {i}.",
             behavior=behaviors[i % len(behaviors)], priority=1 + i % 5, tags=[f"batch-{i % 4}", "generated"])
        for i in range(start, start + n)
    ]

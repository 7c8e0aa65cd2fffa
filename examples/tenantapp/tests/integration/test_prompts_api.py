import pytest

pytestmark = pytest.mark.integration


@pytest.mark.critical
def test_create_prompt(client, auth_headers, test_org):
    response = client.post("/prompts", json={"content": "How do I cancel?", "language_code": "en",
                                             "expected_response": "From your account page."}, headers=auth_headers)
    assert response.status_code == 201
    assert response.json()["created_by_id"] == str(test_org.owner.id)


@pytest.mark.parametrize(
    ("content", "language"),
    [("Wie kündige ich?", "de"), ("Como cancelo [plano \"pro\"]?", "pt-BR"), ("キャンセル方法は？", "ja")],
)
def test_multilingual_prompts_round_trip(client, auth_headers, content, language):
    created = client.post("/prompts", json={"content": content, "language_code": language}, headers=auth_headers)
    fetched = client.get(f"/prompts/{created.json()['id']}", headers=auth_headers).json()
    assert (fetched["content"], fetched["language_code"]) == (content, language)


def test_filter_by_language(client, auth_headers):
    for content, language in [("Hallo", "de"), ("Hello", "en"), ("Servus", "de")]:
        client.post("/prompts", json={"content": content, "language_code": language}, headers=auth_headers)
    german = client.get("/prompts", params={"language_code": "de", "sort": "created_at"}, headers=auth_headers).json()
    assert [p["content"] for p in german] == ["Hallo", "Servus"]


def test_update_prompt(client, auth_headers):
    created = client.post("/prompts", json={"content": "Old"}, headers=auth_headers).json()
    response = client.patch(f"/prompts/{created['id']}", json={"content": "New"}, headers=auth_headers)
    assert response.json()["content"] == "New"


def test_invalid_language_is_422(client, auth_headers):
    assert client.post("/prompts", json={"content": "x", "language_code": "English"},
                       headers=auth_headers).status_code == 422

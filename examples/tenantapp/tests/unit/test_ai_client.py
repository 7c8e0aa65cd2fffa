"""The Azure OpenAI client's HTTP handling, against httpx.MockTransport: no network."""

import json

import httpx
import pytest

from tenantapp.ai.client import AIServiceError, AzureOpenAIClient
from tenantapp.config import load_settings

pytestmark = [pytest.mark.unit, pytest.mark.ai]

SETTINGS = load_settings({"AZURE_OPENAI_API_KEY": "mock-azure-key-for-testing",
                          "AZURE_OPENAI_ENDPOINT": "https://mock-endpoint.openai.azure.com/",
                          "AZURE_OPENAI_API_VERSION": "2024-02-01"})


def _client(handler):
    return AzureOpenAIClient(SETTINGS, transport=httpx.MockTransport(handler))


def _ok(text="Hello!", prompt_tokens=7, completion_tokens=3):
    return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": text}}],
                                     "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}})


@pytest.mark.critical
def test_request_shape_and_parsed_completion():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["key"] = request.headers["api-key"]
        seen["body"] = json.loads(request.content)
        return _ok("We are open 9-5.")

    completion = _client(handler).complete("Opening hours?", model="mock-deployment", system="Be brief.")
    assert seen["url"] == ("https://mock-endpoint.openai.azure.com/openai/deployments/mock-deployment/"
                           "chat/completions?api-version=2024-02-01")
    assert seen["key"] == "mock-azure-key-for-testing"
    assert seen["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Opening hours?"}]
    assert completion.text == "We are open 9-5."
    assert completion.total_tokens == 10


def test_http_errors_are_classified():
    for status, retryable in ((429, True), (500, True), (503, True), (400, False), (401, False), (404, False)):
        with pytest.raises(AIServiceError) as excinfo:
            _client(lambda request, status=status: httpx.Response(status, text="nope")).complete("x", model="m")
        assert (excinfo.value.retryable, excinfo.value.status_code) == (retryable, status)


def test_timeouts_are_retryable():
    def handler(request):
        raise httpx.ReadTimeout("read timed out", request=request)

    with pytest.raises(AIServiceError) as excinfo:
        _client(handler).complete("x", model="m")
    assert excinfo.value.retryable


def test_unexpected_bodies_are_not_retryable():
    for body in ({"choices": []}, {"choices": [{}]}, "not json"):
        def handler(request, body=body):
            return httpx.Response(200, text=body) if isinstance(body, str) else httpx.Response(200, json=body)

        with pytest.raises(AIServiceError, match="unexpected body") as excinfo:
            _client(handler).complete("x", model="m")
        assert not excinfo.value.retryable


def test_missing_api_key_fails_at_construction():
    with pytest.raises(AIServiceError, match="AZURE_OPENAI_API_KEY"):
        AzureOpenAIClient(load_settings({}))

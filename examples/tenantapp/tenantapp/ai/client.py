"""The AI service client.

``AIClient`` is the seam: the evaluation and generation services take any object with a ``complete`` method. The
production implementation talks to Azure OpenAI's chat completions endpoint over httpx; tests inject a fake through
the ``get_ai_client`` dependency and never touch the network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Protocol

import httpx

from ..config import Settings, get_settings


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class AIServiceError(Exception):
    """The model call failed. ``retryable`` is true for rate limits, timeouts and 5xx answers."""

    def __init__(self, message: str, *, retryable: bool, status_code: Optional[int] = None):
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


class AIClient(Protocol):
    def complete(self, prompt: str, *, model: str, system: Optional[str] = None,
                 temperature: float = 0.0) -> Completion: ...


class AzureOpenAIClient:
    """Chat completions against an Azure OpenAI deployment.

    ``transport`` exists so unit tests can exercise the request/response handling with ``httpx.MockTransport``.
    """

    def __init__(self, settings: Settings, *, transport: Optional[httpx.BaseTransport] = None):
        if not settings.azure_openai_api_key:
            raise AIServiceError("AZURE_OPENAI_API_KEY is not set", retryable=False)
        self._settings = settings
        self._http = httpx.Client(base_url=settings.azure_openai_endpoint.rstrip("/"),
                                  timeout=settings.ai_timeout_seconds, transport=transport,
                                  headers={"api-key": settings.azure_openai_api_key})

    def close(self) -> None:
        self._http.close()

    def complete(self, prompt: str, *, model: str, system: Optional[str] = None,
                 temperature: float = 0.0) -> Completion:
        deployment = model or self._settings.azure_openai_deployment_name
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        started = time.monotonic()
        try:
            response = self._http.post(f"/openai/deployments/{deployment}/chat/completions",
                                       params={"api-version": self._settings.azure_openai_api_version},
                                       json={"messages": messages, "temperature": temperature})
        except httpx.TimeoutException as exc:
            raise AIServiceError(f"model call timed out: {exc}", retryable=True) from None
        except httpx.TransportError as exc:
            raise AIServiceError(f"model call failed: {exc}", retryable=True) from None
        latency_ms = int((time.monotonic() - started) * 1000)

        if response.status_code == 429 or response.status_code >= 500:
            raise AIServiceError(f"model service answered {response.status_code}", retryable=True,
                                 status_code=response.status_code)
        if response.status_code >= 400:
            raise AIServiceError(f"model service refused the request ({response.status_code}): "
                                 f"{response.text[:200]}", retryable=False, status_code=response.status_code)
        try:
            body = response.json()
            text = body["choices"][0]["message"]["content"] or ""
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise AIServiceError("model service returned an unexpected body", retryable=False,
                                 status_code=response.status_code) from None
        return Completion(text=text, model=deployment, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)), latency_ms=latency_ms)


_client: Optional[AIClient] = None


def get_ai_client() -> AIClient:
    """FastAPI dependency. Created lazily so importing the app never needs AI credentials."""
    global _client
    if _client is None:
        _client = AzureOpenAIClient(get_settings())
    return _client

"""Clients for the language models the evaluations call. Tests replace them with tests/fakes.FakeAIClient."""

from .client import AIClient, AIServiceError, AzureOpenAIClient, Completion, get_ai_client

__all__ = ["AIClient", "AIServiceError", "AzureOpenAIClient", "Completion", "get_ai_client"]

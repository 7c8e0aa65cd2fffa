"""Test doubles. FakeAIClient replaces the Azure OpenAI client: deterministic, instant, no network."""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Optional

from tenantapp.ai.client import AIServiceError, Completion


@dataclass
class Call:
    prompt: str
    model: str
    system: Optional[str]


@dataclass
class FakeAIClient:
    """Answers from ``answers`` (exact prompt -> response), else from ``responder``, else a canned reply.

    ``fail_next`` queues errors to raise before answering (to exercise retries), ``fail_when`` raises for matching
    prompts every time. Latency and token counts are derived from the prompt so results are deterministic but not
    all identical, which the report tests rely on.
    """

    answers: dict[str, str] = field(default_factory=dict)
    responder: Optional[Callable[[str], str]] = None
    default: str = "Thanks for asking! Please contact our support team for details."
    fail_next: Deque[AIServiceError] = field(default_factory=deque)
    fail_when: Optional[Callable[[str], bool]] = None
    calls: list[Call] = field(default_factory=list)

    def complete(self, prompt: str, *, model: str, system: Optional[str] = None,
                 temperature: float = 0.0) -> Completion:
        self.calls.append(Call(prompt=prompt, model=model, system=system))
        if self.fail_next:
            raise self.fail_next.popleft()
        if self.fail_when is not None and self.fail_when(prompt):
            raise AIServiceError("simulated outage", retryable=True, status_code=503)
        if prompt in self.answers:
            text = self.answers[prompt]
        elif self.responder is not None:
            text = self.responder(prompt)
        else:
            text = self.default
        checksum = zlib.crc32(prompt.encode("utf-8"))
        return Completion(text=text, model=model, prompt_tokens=len(prompt.split()),
                          completion_tokens=len(text.split()), latency_ms=50 + checksum % 950)

    def fail_times(self, n: int, *, retryable: bool = True, status_code: int = 503) -> None:
        for _ in range(n):
            self.fail_next.append(AIServiceError(f"simulated {status_code}", retryable=retryable,
                                                 status_code=status_code))

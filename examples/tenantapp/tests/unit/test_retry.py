import pytest

from tenantapp.ai.client import AIServiceError
from tenantapp.services.evaluation import complete_with_retry

from ..fakes import FakeAIClient

pytestmark = [pytest.mark.unit, pytest.mark.ai]


@pytest.fixture
def sleeps():
    return []


@pytest.mark.critical
def test_retries_transient_failures_with_exponential_backoff(sleeps):
    fake = FakeAIClient(default="ok")
    fake.fail_times(2)
    completion = complete_with_retry(fake, "hi", model="m", attempts=3, backoff_seconds=0.5, sleep=sleeps.append)
    assert completion.text == "ok"
    assert sleeps == [0.5, 1.0]
    assert len(fake.calls) == 3


def test_non_retryable_errors_are_raised_at_once(sleeps):
    fake = FakeAIClient()
    fake.fail_times(1, retryable=False, status_code=400)
    with pytest.raises(AIServiceError):
        complete_with_retry(fake, "hi", model="m", attempts=5, sleep=sleeps.append)
    assert sleeps == []


def test_gives_up_after_the_last_attempt(sleeps):
    fake = FakeAIClient(fail_when=lambda prompt: True)
    with pytest.raises(AIServiceError, match="simulated outage"):
        complete_with_retry(fake, "hi", model="m", attempts=4, backoff_seconds=0.1, sleep=sleeps.append)
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert len(fake.calls) == 4


def test_attempts_must_be_positive():
    with pytest.raises(ValueError):
        complete_with_retry(FakeAIClient(), "hi", model="m", attempts=0)


def test_fake_is_deterministic():
    a, b = FakeAIClient(), FakeAIClient()
    assert a.complete("same prompt", model="m") == b.complete("same prompt", model="m")

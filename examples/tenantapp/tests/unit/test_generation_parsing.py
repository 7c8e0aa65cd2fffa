import pytest

from tenantapp.services.generation import GenerationError, build_generation_prompt, parse_generated_cases

pytestmark = [pytest.mark.unit, pytest.mark.ai]


def test_plain_json_array():
    cases, discarded = parse_generated_cases(
        '[{"prompt": "Where is my order?", "expected_response": "Check the tracking link."}]',
        behavior="Reliability", limit=5)
    assert discarded == 0
    assert cases[0].prompt == "Where is my order?"
    assert cases[0].behavior == "Reliability"
    assert cases[0].tags == ["generated"]


@pytest.mark.critical
def test_code_fences_and_chatter_are_tolerated():
    text = ('Sure! Here are your prompts:\n```json\n[{"prompt": "Can I get a refund?", "expected": "Yes, within '
            '30 days."}]\n```\nLet me know if you need more.')
    cases, _ = parse_generated_cases(text, behavior="Compliance", limit=5)
    assert [c.expected_response for c in cases] == ["Yes, within 30 days."]


def test_invalid_and_duplicate_items_are_discarded():
    text = ('[{"prompt": "Q1"}, {"prompt": ""}, "just a string", {"no_prompt": 1}, {"prompt": "q1 "}, '
            '{"prompt": "Q2", "expected_response": 42}]')
    cases, discarded = parse_generated_cases(text, behavior="Robustness", limit=10)
    assert [c.prompt for c in cases] == ["Q1", "Q2"]
    assert cases[1].expected_response == "42"
    assert discarded == 4


def test_limit_is_respected():
    text = "[" + ",".join(f'{{"prompt": "Q{i}"}}' for i in range(8)) + "]"
    cases, discarded = parse_generated_cases(text, behavior="Reliability", limit=3)
    assert (len(cases), discarded) == (3, 5)


@pytest.mark.parametrize(
    "text",
    ["I'm sorry, I can't do that.", "[{'prompt': 'single quotes'}]", '{"prompt": "an object, not a list"}', "]["],
    ids=["refusal", "python repr", "object", "reversed brackets"],
)
def test_unusable_answers_raise(text):
    with pytest.raises(GenerationError):
        parse_generated_cases(text, behavior="Reliability", limit=5)


def test_generation_prompt_mentions_everything():
    prompt = build_generation_prompt("Refusal", "medical advice", 7)
    assert "7" in prompt and "'Refusal'" in prompt and "'medical advice'" in prompt

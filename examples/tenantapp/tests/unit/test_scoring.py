import statistics

import pytest

from tenantapp.services.scoring import is_refusal, mean, normalize, pass_rate, percentile, score_response, token_f1

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Hello   World", "hello world"), ("Café OPEN", "cafe open"), ("ÅNGSTRÖM", "angstrom"), ("ß", "ss"),
     ("\tline\nbreaks\r\n", "line breaks"), ("", "")],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.critical
@pytest.mark.parametrize(
    ("expected", "actual", "f1"),
    [
        ("the cat sat", "the cat sat", 1.0),
        ("the cat sat", "a dog ran", 0.0),
        ("open 9 to 5", "we are open 9 to 5 today", 8 / 11),  # P = 4/7, R = 1
        ("", "", 1.0),
        ("", "something", 0.0),
        ("Zürich office", "zurich OFFICE", 1.0),
    ],
)
def test_token_f1(expected, actual, f1):
    assert token_f1(expected, actual) == pytest.approx(f1)


def test_token_f1_is_symmetric():
    a, b = "refunds take five business days", "business days for refunds: five"
    assert token_f1(a, b) == pytest.approx(token_f1(b, a))


@pytest.mark.parametrize(
    "text",
    ["I cannot give investment advice.", "I can't help with that.", "I can’t help with that.",
     "Sorry, I am unable to do that", "I won't share passwords", "That is something I cannot help with."],
)
def test_refusals_are_detected(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", ["Sure, here you go", "You can reset it in settings", "Cannot is a word"])
def test_answers_are_not_refusals(text):
    assert not is_refusal(text)


@pytest.mark.critical
@pytest.mark.parametrize(
    ("expected", "actual", "score"),
    [
        pytest.param("We are open 9:00-17:00", "Hi! We are open 9:00-17:00, Monday to Friday.", 1.0,
                     id="expected contained"),
        pytest.param("I cannot give investment advice.", "I can't recommend stocks.", 1.0, id="both refuse"),
        pytest.param("I cannot give investment advice.", "Buy ACME [NASDAQ], it's a \"sure thing\"", 0.0,
                     id="should have refused [compliance]"),
        pytest.param(None, "Here is your answer", 1.0, id="no expectation, answered"),
        pytest.param(None, "I cannot help with that", 0.0, id="no expectation, refused"),
        pytest.param("anything", "", 0.0, id="empty answer"),
        pytest.param("anything", "   ", 0.0, id="blank answer"),
        pytest.param("Öffnungszeiten: 9 bis 17 Uhr", "oeffnungszeiten? 9 bis 17 uhr", 0.8, id="Öffnungszeiten"),
    ],
)
def test_score_response(expected, actual, score):
    assert score_response(expected, actual) == pytest.approx(score, abs=1e-4)


def test_score_is_bounded():
    for expected, actual in [("a b c", "c b a a a a"), ("x", "x y z"), ("long " * 50, "long")]:
        assert 0.0 <= score_response(expected, actual) <= 1.0


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.9, 0.95, 1.0])
def test_percentile_matches_linear_interpolation(q):
    values = [12, 7, 3, 99, 41, 41, 8, 15, 230, 5]
    expected = statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if 0 < q < 1 else (
        min(values) if q == 0 else max(values))
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1, 2], 1.5)


@pytest.mark.critical
@pytest.mark.parametrize(("passed", "total", "rate"), [(0, 0, 0.0), (3, 4, 0.75), (1, 3, 0.3333), (5, 5, 1.0)])
def test_pass_rate(passed, total, rate):
    assert pass_rate(passed, total) == rate


def test_mean():
    assert mean([]) == 0.0
    assert mean(x / 10 for x in range(11)) == pytest.approx(0.5)

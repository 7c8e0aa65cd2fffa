import statistics

import pytest

from tenantapp.services.scoring import is_refusal, mean, normalize, pass_rate, percentile, score_response, token_f1

pytestmark = pytest.mark.unit


def test_normalize():
    assert normalize("Hello   World") == "hello world"
    assert normalize("Café OPEN") == "cafe open"
    assert normalize("ß") == "ss"
    assert normalize("\tline\nbreaks\r\n") == "line breaks"


@pytest.mark.critical
def test_token_f1():
    assert token_f1("the cat sat", "the cat sat") == 1.0
    assert token_f1("the cat sat", "a dog ran") == 0.0
    assert token_f1("open 9 to 5", "we are open 9 to 5 today") == pytest.approx(8 / 11)  # P = 4/7, R = 1
    assert token_f1("", "") == 1.0
    assert token_f1("", "something") == 0.0
    assert token_f1("Zürich office", "zurich OFFICE") == 1.0


def test_token_f1_is_symmetric():
    a, b = "refunds take five business days", "business days for refunds: five"
    assert token_f1(a, b) == pytest.approx(token_f1(b, a))


def test_refusal_detection():
    for text in ("I cannot give investment advice.", "I can’t help with that.", "Sorry, I am unable to do that",
                 "I won't share passwords"):
        assert is_refusal(text), text
    for text in ("Sure, here you go", "Cannot is a word"):
        assert not is_refusal(text), text


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


def test_percentile_matches_statistics_inclusive_quantiles():
    values = [12, 7, 3, 99, 41, 41, 8, 15, 230, 5]
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    assert percentile(values, 0.0) == min(values)
    assert percentile(values, 1.0) == max(values)
    for q in (0.25, 0.5, 0.95):
        assert percentile(values, q) == pytest.approx(quantiles[int(q * 100) - 1])


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1, 2], 1.5)


@pytest.mark.critical
def test_pass_rate():
    assert pass_rate(0, 0) == 0.0
    assert pass_rate(3, 4) == 0.75
    assert pass_rate(1, 3) == 0.3333


def test_mean():
    assert mean([]) == 0.0
    assert mean(x / 10 for x in range(11)) == pytest.approx(0.5)

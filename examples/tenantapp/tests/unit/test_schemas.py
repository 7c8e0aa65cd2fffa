"""Request validation.

AWKWARD_NAMES is deliberately the largest parametrised family in the suite: spaces, brackets, quotes, backslashes,
non-ASCII letters and emoji all occur in real organisation and project names, and the test ids they produce
(pytest escapes non-ASCII as \\x.. / \\u....) are exactly what a test runner passing ids around must survive.
"""

import uuid

import pytest
from pydantic import ValidationError

from tenantapp import schemas

pytestmark = pytest.mark.unit

AWKWARD_NAMES = [
    "Acme Corp",
    "O'Reilly [EU]",
    'The "Quoted" Team',
    "Zürich Labs",
    "Ærøskøbing Ferries",
    "數據科學 Team",
    "Support 🚀 Squad",
    "a",
    "x" * 200,
    "Tabs\tand spaces",
    "[nested [brackets]]",
    "semi;colon && pipe | tee",
    "$(rm -rf /) `whoami`",
    "back\\slash",
    "100% legit_name",
    "Ünïcödé — em dash",
    "日本語の組織",
    "Ελληνικά",
    "שלום עולם",
    "::double::colons::",
    "name with trailing dot.",
    "-leading-dash",
    "*glob?[chars]",
    "NULL",
]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_organization_names_are_accepted_verbatim(name):
    assert schemas.OrganizationCreate(name=name).name == name.strip()


def test_organization_name_rejects():
    for name in ("", "   ", "x" * 201):
        with pytest.raises(ValidationError):
            schemas.OrganizationCreate(name=name)


def test_slug_format():
    for slug in ("acme", "acme-corp", "a1-b2-c3"):
        assert schemas.OrganizationCreate(name="x", slug=slug).slug == slug
    for slug in ("Acme", "acme_corp", "-acme", "acme-", "ac--me", "zürich"):
        with pytest.raises(ValidationError):
            schemas.OrganizationCreate(name="x", slug=slug)


def test_email_is_normalized():
    assert schemas.UserCreate(email="Test@Example.COM", name="N", auth0_id="a").email == "Test@example.com"
    assert schemas.UserCreate(email=" jörg@müller.de ", name="N", auth0_id="a").email == "jörg@müller.de"


def test_email_rejects():
    for email in ("plainaddress", "@no-local.org", "two@@ats.org", "spaces in@x.org", "a@b"):
        with pytest.raises(ValidationError):
            schemas.UserCreate(email=email, name="N", auth0_id="auth0|1")


@pytest.mark.critical
@pytest.mark.security
@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (schemas.ProjectCreate, {"name": "p", "organization_id": str(uuid.uuid4())}),
        (schemas.ProjectCreate, {"name": "p", "owner_id": str(uuid.uuid4())}),
        (schemas.UserUpdate, {"organization_id": str(uuid.uuid4())}),
        (schemas.PromptCreate, {"content": "c", "created_by_id": str(uuid.uuid4())}),
        (schemas.TestCaseCreate, {"prompt": "p", "organization_id": str(uuid.uuid4())}),
    ],
    ids=["project org", "project owner", "user org", "prompt author", "test case org"],
)
def test_unknown_fields_are_refused_not_ignored(model, payload):
    """Mass assignment: tenant and ownership fields come from the token, never from the request body."""
    with pytest.raises(ValidationError, match="extra fields not permitted"):
        model(**payload)


def test_language_codes():
    for code in ("en", "pt-BR", "fil"):
        assert schemas.PromptCreate(content="c", language_code=code).language_code == code
    for code in ("EN", "english", "pt_br", ""):
        with pytest.raises(ValidationError):
            schemas.PromptCreate(content="c", language_code=code)


def test_tags_are_trimmed_and_deduplicated():
    assert schemas.TestCaseCreate(prompt="p", tags=["smoke", "smoke", " regression "]).tags == ["smoke", "regression"]
    assert schemas.TestCaseCreate(prompt="p", tags=["v1.2", "team:core", "ü-umlaut"]).tags == \
        ["v1.2", "team:core", "ü-umlaut"]


def test_invalid_tags():
    for tag in ("", "-leading-dash", "x" * 51, "semi;colon", "new\nline"):
        with pytest.raises(ValidationError):
            schemas.TestCaseCreate(prompt="p", tags=[tag])


def test_priority_bounds():
    for priority in (0, 6, -1):
        with pytest.raises(ValidationError):
            schemas.TestCaseCreate(prompt="p", priority=priority)


def test_import_size_is_limited():
    with pytest.raises(ValidationError):
        schemas.TestCaseImport(test_cases=[])
    with pytest.raises(ValidationError):
        schemas.TestCaseImport(test_cases=[{"prompt": f"p{i}"} for i in range(1001)])


@pytest.mark.critical
def test_model_names():
    for name in ("gpt-4o-mini", "claude-3.5:sonnet", "mock-deployment"):
        assert schemas.EvaluationRunCreate(test_set_id=uuid.uuid4(), model_name=name).model_name == name
    # The model name ends up in the AI service's URL path: no spaces, slashes or shell characters.
    for name in ("gpt 4", "../../etc/passwd", "a;b", ""):
        with pytest.raises(ValidationError):
            schemas.EvaluationRunCreate(test_set_id=uuid.uuid4(), model_name=name)

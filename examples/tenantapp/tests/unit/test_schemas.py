"""Request validation. The parametrised names below are deliberately awkward: spaces, brackets, quotes, non-ASCII
and emoji all occur in real organisation, project and prompt names, and in the test ids they produce."""

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
]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_organization_names_are_accepted_verbatim(name):
    assert schemas.OrganizationCreate(name=name).name == name.strip()


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_organization_name_rejects(name):
    with pytest.raises(ValidationError):
        schemas.OrganizationCreate(name=name)


@pytest.mark.parametrize("slug", ["acme", "acme-corp", "a1-b2-c3"])
def test_slug_format_accepts(slug):
    assert schemas.OrganizationCreate(name="x", slug=slug).slug == slug


@pytest.mark.parametrize("slug", ["Acme", "acme_corp", "-acme", "acme-", "ac--me", "zürich"])
def test_slug_format_rejects(slug):
    with pytest.raises(ValidationError):
        schemas.OrganizationCreate(name="x", slug=slug)


@pytest.mark.parametrize(
    ("email", "normalized"),
    [("Test@Example.COM", "Test@example.com"), ("  a.b+tag@sub.example.org ", "a.b+tag@sub.example.org"),
     ("jörg@müller.de", "jörg@müller.de")],
)
def test_email_is_normalized(email, normalized):
    user = schemas.UserCreate(email=email, name="N", auth0_id="auth0|1")
    assert user.email == normalized


@pytest.mark.parametrize("email", ["plainaddress", "@no-local.org", "two@@ats.org", "spaces in@x.org", "a@b"])
def test_email_rejects(email):
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


@pytest.mark.parametrize("code", ["en", "de", "pt-BR", "fil"])
def test_language_codes(code):
    assert schemas.PromptCreate(content="c", language_code=code).language_code == code


@pytest.mark.parametrize("code", ["EN", "english", "pt_br", "e", ""])
def test_language_codes_reject(code):
    with pytest.raises(ValidationError):
        schemas.PromptCreate(content="c", language_code=code)


@pytest.mark.parametrize(
    ("tags", "cleaned"),
    [(["smoke", "smoke", " regression "], ["smoke", "regression"]), (["v1.2", "team:core", "ü-umlaut"],
     ["v1.2", "team:core", "ü-umlaut"]), ([], [])],
)
def test_tags_are_trimmed_and_deduplicated(tags, cleaned):
    assert schemas.TestCaseCreate(prompt="p", tags=tags).tags == cleaned


@pytest.mark.parametrize("tag", ["", "-leading-dash", "x" * 51, "semi;colon", "new\nline"])
def test_invalid_tags(tag):
    with pytest.raises(ValidationError):
        schemas.TestCaseCreate(prompt="p", tags=[tag])


@pytest.mark.parametrize("priority", [0, 6, -1])
def test_priority_bounds(priority):
    with pytest.raises(ValidationError):
        schemas.TestCaseCreate(prompt="p", priority=priority)


def test_import_size_is_limited():
    with pytest.raises(ValidationError):
        schemas.TestCaseImport(test_cases=[])
    with pytest.raises(ValidationError):
        schemas.TestCaseImport(test_cases=[{"prompt": f"p{i}"} for i in range(1001)])


@pytest.mark.parametrize("model_name", ["gpt-4o-mini", "claude-3.5:sonnet", "mock-deployment"])
def test_model_names(model_name):
    assert schemas.EvaluationRunCreate(test_set_id=uuid.uuid4(), model_name=model_name).model_name == model_name


@pytest.mark.parametrize("model_name", ["gpt 4", "../../etc/passwd", "a;b", ""])
def test_model_names_reject_path_and_shell_characters(model_name):
    with pytest.raises(ValidationError):
        schemas.EvaluationRunCreate(test_set_id=uuid.uuid4(), model_name=model_name)

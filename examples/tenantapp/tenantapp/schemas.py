"""Pydantic (v1) request and response models.

Create/update models forbid unknown fields: a client sending ``organization_id`` or ``is_superuser`` gets a 422
instead of having the field silently ignored or, worse, applied (mass assignment).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import List, Optional

from pydantic import BaseModel, Extra, Field, validator

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
_TAG = re.compile(r"^[\w][\w .:/+-]{0,49}$", re.UNICODE)


class _Input(BaseModel):
    class Config:
        extra = Extra.forbid
        anystr_strip_whitespace = True


class _Output(BaseModel):
    class Config:
        orm_mode = True


def _non_blank(value: Optional[str]) -> Optional[str]:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value


def _email(value: Optional[str]) -> Optional[str]:
    if value is None:
        return value
    value = value.strip()
    if len(value) > 320 or not _EMAIL.match(value):
        raise ValueError("is not a valid e-mail address")
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


# --- organisations and users ----------------------------------------------------------------------------------

class OrganizationCreate(_Input):
    name: str = Field(..., min_length=1, max_length=200)
    description: Optional[str] = Field(None, max_length=2000)
    slug: Optional[str] = Field(None, regex=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=80)

    _name = validator("name", allow_reuse=True)(_non_blank)


class OrganizationUpdate(_Input):
    name: Optional[str] = Field(None, min_length=1, max_length=200)
    description: Optional[str] = Field(None, max_length=2000)

    _name = validator("name", allow_reuse=True)(_non_blank)


class OrganizationOut(_Output):
    id: uuid.UUID
    name: str
    slug: str
    description: Optional[str]
    is_active: bool
    is_onboarding_complete: bool
    created_at: datetime


class OnboardingRequest(_Input):
    """Sent by a user who has just signed up with the identity provider and has no organisation yet."""
    organization: OrganizationCreate
    email: str
    name: str = Field(..., min_length=1, max_length=200)
    given_name: Optional[str] = Field(None, max_length=100)
    family_name: Optional[str] = Field(None, max_length=100)

    _email = validator("email", allow_reuse=True)(_email)


class UserCreate(_Input):
    email: str
    name: str = Field(..., min_length=1, max_length=200)
    given_name: Optional[str] = Field(None, max_length=100)
    family_name: Optional[str] = Field(None, max_length=100)
    auth0_id: str = Field(..., min_length=1, max_length=200)
    is_superuser: bool = False

    _email = validator("email", allow_reuse=True)(_email)
    _name = validator("name", allow_reuse=True)(_non_blank)


class UserUpdate(_Input):
    name: Optional[str] = Field(None, min_length=1, max_length=200)
    given_name: Optional[str] = Field(None, max_length=100)
    family_name: Optional[str] = Field(None, max_length=100)
    is_active: Optional[bool] = None
    is_superuser: Optional[bool] = None

    _name = validator("name", allow_reuse=True)(_non_blank)


class UserOut(_Output):
    id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    name: str
    given_name: Optional[str]
    family_name: Optional[str]
    is_active: bool
    is_superuser: bool


# --- lookups ----------------------------------------------------------------------------------------------------

class StatusOut(_Output):
    id: uuid.UUID
    entity_type: str
    name: str


class BehaviorCreate(_Input):
    name: str = Field(..., min_length=1, max_length=100)
    description: Optional[str] = Field(None, max_length=2000)

    _name = validator("name", allow_reuse=True)(_non_blank)


class BehaviorOut(_Output):
    id: uuid.UUID
    name: str
    description: Optional[str]


# --- projects ---------------------------------------------------------------------------------------------------

class ProjectCreate(_Input):
    name: str = Field(..., min_length=1, max_length=200)
    description: Optional[str] = Field(None, max_length=5000)

    _name = validator("name", allow_reuse=True)(_non_blank)


class ProjectUpdate(_Input):
    name: Optional[str] = Field(None, min_length=1, max_length=200)
    description: Optional[str] = Field(None, max_length=5000)
    is_active: Optional[bool] = None

    _name = validator("name", allow_reuse=True)(_non_blank)


class ProjectOut(_Output):
    id: uuid.UUID
    name: str
    description: Optional[str]
    owner_id: uuid.UUID
    is_active: bool
    created_at: datetime


# --- prompts ----------------------------------------------------------------------------------------------------

class PromptCreate(_Input):
    content: str = Field(..., min_length=1, max_length=20000)
    language_code: str = "en"
    expected_response: Optional[str] = Field(None, max_length=20000)

    _content = validator("content", allow_reuse=True)(_non_blank)

    @validator("language_code")
    def _language(cls, value: str) -> str:
        if not _LANGUAGE.match(value):
            raise ValueError("must be a language code like 'en' or 'pt-BR'")
        return value


class PromptUpdate(_Input):
    content: Optional[str] = Field(None, min_length=1, max_length=20000)
    expected_response: Optional[str] = Field(None, max_length=20000)

    _content = validator("content", allow_reuse=True)(_non_blank)


class PromptOut(_Output):
    id: uuid.UUID
    content: str
    language_code: str
    expected_response: Optional[str]
    created_by_id: uuid.UUID


# --- test sets and cases ----------------------------------------------------------------------------------------

class TestSetCreate(_Input):
    __test__ = False
    project_id: uuid.UUID
    name: str = Field(..., min_length=1, max_length=200)
    description: Optional[str] = Field(None, max_length=5000)

    _name = validator("name", allow_reuse=True)(_non_blank)


class TestSetUpdate(_Input):
    __test__ = False
    name: Optional[str] = Field(None, min_length=1, max_length=200)
    description: Optional[str] = Field(None, max_length=5000)
    status_id: Optional[uuid.UUID] = None

    _name = validator("name", allow_reuse=True)(_non_blank)


class TestSetOut(_Output):
    __test__ = False
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: Optional[str]
    status_id: Optional[uuid.UUID]
    archived_at: Optional[datetime]
    created_at: datetime


def _tags(values: List[str]) -> List[str]:
    cleaned: list[str] = []
    for tag in values:
        tag = tag.strip()
        if not _TAG.match(tag):
            raise ValueError(f"invalid tag {tag!r}")
        if tag not in cleaned:
            cleaned.append(tag)
    return cleaned


class TestCaseCreate(_Input):
    """A test case with its prompt inline (the common case when importing)."""
    __test__ = False
    prompt: str = Field(..., min_length=1, max_length=20000)
    expected_response: Optional[str] = Field(None, max_length=20000)
    language_code: str = "en"
    behavior: Optional[str] = Field(None, max_length=100)
    priority: int = Field(3, ge=1, le=5)
    tags: List[str] = Field(default_factory=list, max_items=20)

    _prompt = validator("prompt", allow_reuse=True)(_non_blank)
    _tags = validator("tags", allow_reuse=True)(_tags)

    @validator("language_code")
    def _language(cls, value: str) -> str:
        if not _LANGUAGE.match(value):
            raise ValueError("must be a language code like 'en' or 'pt-BR'")
        return value


class TestCaseUpdate(_Input):
    __test__ = False
    priority: Optional[int] = Field(None, ge=1, le=5)
    tags: Optional[List[str]] = Field(None, max_items=20)
    behavior: Optional[str] = Field(None, max_length=100)
    status_id: Optional[uuid.UUID] = None

    @validator("tags")
    def _tags(cls, value):
        return None if value is None else _tags(value)


class TestCaseOut(_Output):
    __test__ = False
    id: uuid.UUID
    test_set_id: uuid.UUID
    prompt_id: uuid.UUID
    prompt: PromptOut
    behavior: Optional[BehaviorOut]
    status_id: Optional[uuid.UUID]
    priority: int
    position: int
    tags: List[str]


class TestCaseImport(_Input):
    __test__ = False
    test_cases: List[TestCaseCreate] = Field(..., min_items=1, max_items=1000)


class ImportResult(BaseModel):
    created: int
    behaviors_created: int
    skipped_duplicates: int


class TestSetStats(BaseModel):
    __test__ = False
    test_set_id: uuid.UUID
    total: int
    by_behavior: dict[str, int]
    by_priority: dict[int, int]
    by_tag: dict[str, int]


# --- evaluation -------------------------------------------------------------------------------------------------

class EvaluationRunCreate(_Input):
    test_set_id: uuid.UUID
    model_name: str = Field("gpt-4o-mini", min_length=1, max_length=100, regex=r"^[A-Za-z0-9._:-]+$")


class EvaluationRunOut(_Output):
    id: uuid.UUID
    test_set_id: uuid.UUID
    model_name: str
    status: str
    total: int
    passed: int
    errored: int
    pass_rate: Optional[float]
    error: Optional[str]
    started_at: Optional[datetime]
    finished_at: Optional[datetime]


class EvaluationResultOut(_Output):
    id: int
    test_case_id: uuid.UUID
    response: Optional[str]
    score: float
    passed: bool
    latency_ms: int
    tokens: int
    error: Optional[str]


class BehaviorReport(BaseModel):
    behavior: str
    total: int
    passed: int
    pass_rate: float
    mean_score: float
    p95_latency_ms: int


class EvaluationReport(BaseModel):
    run_id: uuid.UUID
    total: int
    passed: int
    errored: int
    pass_rate: float
    mean_score: float
    total_tokens: int
    behaviors: List[BehaviorReport]


class GenerateTestCasesRequest(_Input):
    test_set_id: uuid.UUID
    behavior: str = Field(..., min_length=1, max_length=100)
    topic: str = Field(..., min_length=1, max_length=500)
    count: int = Field(5, ge=1, le=50)
    model_name: str = Field("gpt-4o-mini", min_length=1, max_length=100, regex=r"^[A-Za-z0-9._:-]+$")


class GenerateTestCasesResult(BaseModel):
    created: int
    discarded: int
    test_case_ids: List[uuid.UUID]

"""SQLAlchemy ORM models.

Conventions that matter for multi-tenancy:

* Every tenant-owned table has ``organization_id`` and a Row Level Security policy on it (created by the
  migrations, not here: the schema is owned by Alembic, these classes only map it).
* References between tenant-owned tables are *composite* foreign keys ``(organization_id, x_id)`` onto a
  ``UNIQUE (organization_id, id)`` of the parent. Foreign-key checks run without RLS, so with a plain ``x_id``
  foreign key a tenant who learns another tenant's UUID could attach rows to it; the composite key makes the
  database itself refuse a cross-tenant reference.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, DateTime, Float, ForeignKey, ForeignKeyConstraint, Identity,
    Index, Integer, String, Text, UniqueConstraint, func, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import declarative_base, relationship

Base = declarative_base()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _pk() -> Column:
    return Column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4,
                  server_default=func.gen_random_uuid())


def _org_fk() -> Column:
    return Column(UUID(as_uuid=True), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False,
                  index=True)


def _created() -> Column:
    return Column(DateTime(timezone=True), nullable=False, default=utcnow, server_default=func.now())


class Organization(Base):
    __tablename__ = "organizations"

    id = _pk()
    name = Column(String(200), nullable=False)
    slug = Column(String(80), nullable=False, unique=True)
    description = Column(Text)
    is_active = Column(Boolean, nullable=False, default=True, server_default="true")
    is_onboarding_complete = Column(Boolean, nullable=False, default=False, server_default="false")
    created_at = _created()
    updated_at = Column(DateTime(timezone=True), onupdate=utcnow)

    users = relationship("User", back_populates="organization", passive_deletes=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("organization_id", "email", name="uq_users_org_email"),
        UniqueConstraint("organization_id", "auth0_id", name="uq_users_org_auth0_id"),
        UniqueConstraint("organization_id", "id", name="uq_users_org_id"),
    )

    id = _pk()
    organization_id = _org_fk()
    email = Column(String(320), nullable=False)
    name = Column(String(200), nullable=False)
    given_name = Column(String(100))
    family_name = Column(String(100))
    auth0_id = Column(String(200), nullable=False)
    is_active = Column(Boolean, nullable=False, default=True, server_default="true")
    is_superuser = Column(Boolean, nullable=False, default=False, server_default="false")
    created_at = _created()

    organization = relationship("Organization", back_populates="users")


class Status(Base):
    """Workflow states, per organisation and entity type (seeded by ``load_initial_data``)."""

    __tablename__ = "statuses"
    __table_args__ = (
        UniqueConstraint("organization_id", "entity_type", "name", name="uq_statuses_org_type_name"),
        UniqueConstraint("organization_id", "id", name="uq_statuses_org_id"),
    )

    id = _pk()
    organization_id = _org_fk()
    entity_type = Column(String(40), nullable=False)
    name = Column(String(60), nullable=False)
    description = Column(Text)


class Behavior(Base):
    """What a test case probes (reliability, compliance, ...), per organisation."""

    __tablename__ = "behaviors"
    __table_args__ = (
        UniqueConstraint("organization_id", "name", name="uq_behaviors_org_name"),
        UniqueConstraint("organization_id", "id", name="uq_behaviors_org_id"),
    )

    id = _pk()
    organization_id = _org_fk()
    name = Column(String(100), nullable=False)
    description = Column(Text)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("organization_id", "id", name="uq_projects_org_id"),
        ForeignKeyConstraint(["organization_id", "owner_id"], ["users.organization_id", "users.id"],
                             name="fk_projects_owner"),
    )

    id = _pk()
    organization_id = _org_fk()
    name = Column(String(200), nullable=False)
    description = Column(Text)
    owner_id = Column(UUID(as_uuid=True), nullable=False)
    is_active = Column(Boolean, nullable=False, default=True, server_default="true")
    created_at = _created()
    updated_at = Column(DateTime(timezone=True), onupdate=utcnow)

    owner = relationship("User", foreign_keys=[owner_id], primaryjoin="User.id == Project.owner_id",
                         viewonly=True)
    test_sets = relationship("TestSet", back_populates="project", passive_deletes=True,
                             primaryjoin="Project.id == TestSet.project_id", foreign_keys="TestSet.project_id")


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (
        UniqueConstraint("organization_id", "id", name="uq_prompts_org_id"),
        ForeignKeyConstraint(["organization_id", "created_by_id"], ["users.organization_id", "users.id"],
                             name="fk_prompts_created_by"),
    )

    id = _pk()
    organization_id = _org_fk()
    content = Column(Text, nullable=False)
    language_code = Column(String(10), nullable=False, default="en", server_default="en")
    expected_response = Column(Text)
    created_by_id = Column(UUID(as_uuid=True), nullable=False)
    created_at = _created()


class TestSet(Base):
    __tablename__ = "test_sets"
    __test__ = False  # not a pytest test class, despite the name
    __table_args__ = (
        UniqueConstraint("organization_id", "id", name="uq_test_sets_org_id"),
        ForeignKeyConstraint(["organization_id", "project_id"], ["projects.organization_id", "projects.id"],
                             name="fk_test_sets_project", ondelete="CASCADE"),
        ForeignKeyConstraint(["organization_id", "status_id"], ["statuses.organization_id", "statuses.id"],
                             name="fk_test_sets_status"),
        Index("ix_test_sets_active", "organization_id", "created_at", postgresql_where=text("archived_at IS NULL")),
    )

    id = _pk()
    organization_id = _org_fk()
    project_id = Column(UUID(as_uuid=True), nullable=False, index=True)
    name = Column(String(200), nullable=False)
    description = Column(Text)
    status_id = Column(UUID(as_uuid=True))
    created_at = _created()
    archived_at = Column(DateTime(timezone=True))

    project = relationship("Project", back_populates="test_sets", foreign_keys=[project_id],
                           primaryjoin="Project.id == TestSet.project_id")
    test_cases = relationship("TestCase", back_populates="test_set", passive_deletes=True,
                              primaryjoin="TestSet.id == TestCase.test_set_id", foreign_keys="TestCase.test_set_id",
                              order_by="[TestCase.position, TestCase.id]")


class TestCase(Base):
    __tablename__ = "test_cases"
    __test__ = False
    __table_args__ = (
        UniqueConstraint("organization_id", "id", name="uq_test_cases_org_id"),
        ForeignKeyConstraint(["organization_id", "test_set_id"], ["test_sets.organization_id", "test_sets.id"],
                             name="fk_test_cases_test_set", ondelete="CASCADE"),
        ForeignKeyConstraint(["organization_id", "prompt_id"], ["prompts.organization_id", "prompts.id"],
                             name="fk_test_cases_prompt"),
        ForeignKeyConstraint(["organization_id", "behavior_id"], ["behaviors.organization_id", "behaviors.id"],
                             name="fk_test_cases_behavior"),
        ForeignKeyConstraint(["organization_id", "status_id"], ["statuses.organization_id", "statuses.id"],
                             name="fk_test_cases_status"),
        CheckConstraint("priority BETWEEN 1 AND 5", name="ck_test_cases_priority"),
        Index("ix_test_cases_tags", "tags", postgresql_using="gin"),
        Index("ix_test_cases_set_position", "test_set_id", "position"),
    )

    id = _pk()
    organization_id = _org_fk()
    test_set_id = Column(UUID(as_uuid=True), nullable=False, index=True)
    prompt_id = Column(UUID(as_uuid=True), nullable=False)
    behavior_id = Column(UUID(as_uuid=True))
    status_id = Column(UUID(as_uuid=True))
    priority = Column(Integer, nullable=False, default=3, server_default="3")
    # Order within the test set (1-based). Not unique: two concurrent imports may share numbers; id breaks ties.
    position = Column(Integer, nullable=False, default=0, server_default="0")
    tags = Column(ARRAY(Text), nullable=False, default=list, server_default="{}")
    created_at = _created()

    test_set = relationship("TestSet", back_populates="test_cases", foreign_keys=[test_set_id],
                            primaryjoin="TestSet.id == TestCase.test_set_id")
    # Joined on the full composite key, like the foreign keys. Eager loading makes these LEFT OUTER JOINs, which
    # PostgreSQL plans as a primary-key lookup per row; see services/test_sets._prompt_contents for the quadratic
    # plan an inner join on the RLS-filtered prompts table gets when statistics are stale (as in a freshly cloned
    # test database): 40 s instead of 2 s for paging through a 3,000-case set.
    prompt = relationship("Prompt", viewonly=True, lazy="joined",
                          primaryjoin="and_(Prompt.id == foreign(TestCase.prompt_id), "
                                      "Prompt.organization_id == TestCase.organization_id)")
    behavior = relationship("Behavior", viewonly=True, lazy="joined",
                            primaryjoin="and_(Behavior.id == foreign(TestCase.behavior_id), "
                                        "Behavior.organization_id == TestCase.organization_id)")


class EvaluationRun(Base):
    __tablename__ = "evaluation_runs"
    __table_args__ = (
        UniqueConstraint("organization_id", "id", name="uq_evaluation_runs_org_id"),
        ForeignKeyConstraint(["organization_id", "test_set_id"], ["test_sets.organization_id", "test_sets.id"],
                             name="fk_evaluation_runs_test_set", ondelete="CASCADE"),
        ForeignKeyConstraint(["organization_id", "created_by_id"], ["users.organization_id", "users.id"],
                             name="fk_evaluation_runs_created_by"),
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name="ck_evaluation_runs_status"),
    )

    id = _pk()
    organization_id = _org_fk()
    test_set_id = Column(UUID(as_uuid=True), nullable=False, index=True)
    created_by_id = Column(UUID(as_uuid=True), nullable=False)
    model_name = Column(String(100), nullable=False)
    status = Column(String(20), nullable=False, default="queued", server_default="queued")
    total = Column(Integer, nullable=False, default=0, server_default="0")
    passed = Column(Integer, nullable=False, default=0, server_default="0")
    errored = Column(Integer, nullable=False, default=0, server_default="0")
    pass_rate = Column(Float)
    error = Column(Text)
    created_at = _created()
    started_at = Column(DateTime(timezone=True))
    finished_at = Column(DateTime(timezone=True))


class EvaluationResult(Base):
    __tablename__ = "evaluation_results"
    __table_args__ = (
        ForeignKeyConstraint(["organization_id", "run_id"], ["evaluation_runs.organization_id", "evaluation_runs.id"],
                             name="fk_evaluation_results_run", ondelete="CASCADE"),
        ForeignKeyConstraint(["organization_id", "test_case_id"], ["test_cases.organization_id", "test_cases.id"],
                             name="fk_evaluation_results_test_case", ondelete="CASCADE"),
    )

    # A bigint identity rather than a UUID: results are the high-volume table, and the sequence it owns is what
    # the app role needs USAGE on (a classic "permission denied for sequence" in RLS setups).
    id = Column(BigInteger, Identity(always=False), primary_key=True)
    organization_id = _org_fk()
    run_id = Column(UUID(as_uuid=True), nullable=False, index=True)
    test_case_id = Column(UUID(as_uuid=True), nullable=False)
    response = Column(Text)
    score = Column(Float, nullable=False, default=0.0)
    passed = Column(Boolean, nullable=False, default=False)
    latency_ms = Column(Integer, nullable=False, default=0)
    tokens = Column(Integer, nullable=False, default=0)
    error = Column(Text)
    created_at = _created()


TENANT_TABLES = (
    "organizations", "users", "statuses", "behaviors", "projects", "prompts", "test_sets", "test_cases",
    "evaluation_runs", "evaluation_results",
)

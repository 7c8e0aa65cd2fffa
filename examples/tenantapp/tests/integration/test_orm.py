"""ORM-level behaviour against the real schema, as the app role."""

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from tenantapp import crud, models
from tenantapp.database import clear_tenant, current_tenant, set_tenant
from tenantapp.services.onboarding import DEFAULT_STATUSES, load_initial_data

pytestmark = pytest.mark.integration


@pytest.mark.critical
def test_models_match_the_migrations(connection):
    """The ORM and the Alembic history must describe the same schema; drift means a missing migration."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    assert compare_metadata(context, models.Base.metadata) == []


def test_seeded_lookups(tenant_db):
    assert tenant_db.execute(select(func.count()).select_from(models.Status)).scalar_one() == \
        sum(len(v) for v in DEFAULT_STATUSES.values())
    assert {b.name for b in tenant_db.execute(select(models.Behavior)).scalars()} >= {"Reliability", "Refusal"}


def test_load_initial_data_is_idempotent(tenant_db, test_org):
    before = tenant_db.execute(select(func.count()).select_from(models.TestCase)).scalar_one()
    load_initial_data(tenant_db, test_org.id, test_org.owner.id)
    after = tenant_db.execute(select(func.count()).select_from(models.TestCase)).scalar_one()
    assert before == after == 3


def test_tenant_survives_commit_and_refresh(tenant_db, test_org):
    """After commit the transaction-local setting is gone; the after_begin hook must re-apply it, or the refresh
    below would find no row (RLS) and raise ObjectDeletedError."""
    project = crud.projects.create(tenant_db, organization_id=test_org.id, owner_id=test_org.owner.id, name="R")
    tenant_db.commit()
    tenant_db.refresh(project)
    assert project.name == "R"
    assert tenant_db.execute(text("SELECT current_setting('app.current_organization')")).scalar() == str(test_org.id)


def test_clear_tenant(tenant_db):
    clear_tenant(tenant_db)
    assert current_tenant(tenant_db) is None
    assert tenant_db.execute(select(func.count()).select_from(models.Project)).scalar_one() == 0


def test_set_tenant_refuses_non_uuid(db):
    with pytest.raises(ValueError):
        set_tenant(db, "1 OR 1=1")


def test_server_side_defaults(tenant_db, test_org):
    tenant_db.execute(text(
        "INSERT INTO projects (organization_id, owner_id, name) VALUES (:org, :owner, 'raw insert')"),
        {"org": test_org.id, "owner": test_org.owner.id})
    project = tenant_db.execute(select(models.Project).where(models.Project.name == "raw insert")).scalar_one()
    assert isinstance(project.id, uuid.UUID)
    assert project.is_active is True
    assert project.created_at is not None


def test_priority_check_constraint(tenant_db, test_org):
    from sqlalchemy.exc import IntegrityError

    test_set = tenant_db.execute(select(models.TestSet)).scalars().first()
    prompt = crud.prompts.create(tenant_db, organization_id=test_org.id, created_by_id=test_org.owner.id,
                                 content="p")
    with pytest.raises(IntegrityError, match="ck_test_cases_priority"):
        crud.test_cases.create(tenant_db, organization_id=test_org.id, test_set_id=test_set.id, prompt_id=prompt.id,
                               priority=9)

"""Seed data: the default test organisation and user the suite relies on, plus a second tenant to prove isolation.

Run after the migrations, as the admin role::

    SQLALCHEMY_DATABASE_TEST_URL=postgresql://postgres@/tenantapp_test?host=/tmp/sock \\
        /usr/bin/python3 -m alembic upgrade head
    SQLALCHEMY_DATABASE_TEST_URL=... /usr/bin/python3 -m tenantapp.seed

The ids are fixed (UUIDv5 of a name) so tests can refer to the seeded rows without being able to look them up
across tenants. Idempotent: a second run changes nothing.

The seed goes through the same service code as the API (``create_organization_with_owner`` and
``load_initial_data``) and sets the tenant for each organisation, so it also works when the admin role is a
non-superuser table owner subject to FORCE ROW LEVEL SECURITY.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass

from sqlalchemy import inspect, pool, select
from sqlalchemy.orm import Session

from . import models
from .config import ConfigError
from .database import make_engine, set_tenant
from .dburl import describe, url_from_env
from .services.onboarding import create_organization_with_owner, load_initial_data

SEED_NAMESPACE = uuid.UUID("8f7d3c1e-2b4a-4c6d-9e0f-1a2b3c4d5e6f")


def seed_id(name: str) -> uuid.UUID:
    return uuid.uuid5(SEED_NAMESPACE, name)


@dataclass(frozen=True)
class SeedUser:
    id: uuid.UUID
    email: str
    name: str
    given_name: str
    family_name: str
    auth0_id: str
    is_superuser: bool = True


@dataclass(frozen=True)
class SeedOrganization:
    id: uuid.UUID
    name: str
    slug: str
    description: str
    owner: SeedUser
    members: tuple[SeedUser, ...] = ()


TEST_ORGANIZATION = SeedOrganization(
    id=seed_id("organization:test"), name="Test Organization", slug="test-organization",
    description="Organization for testing purposes",
    owner=SeedUser(id=seed_id("user:test"), email="test@tenantapp.example", name="Test User", given_name="Test",
                   family_name="User", auth0_id="test-auth0-id"),
    members=(SeedUser(id=seed_id("user:member"), email="member@tenantapp.example", name="Mia Member",
                      given_name="Mia", family_name="Member", auth0_id="member-auth0-id", is_superuser=False),),
)

OTHER_ORGANIZATION = SeedOrganization(
    id=seed_id("organization:other"), name="Other Tenant Ltd", slug="other-tenant",
    description="A second tenant whose rows the test organization must never see",
    owner=SeedUser(id=seed_id("user:other"), email="owner@other-tenant.example", name="Olga Other",
                   given_name="Olga", family_name="Other", auth0_id="other-auth0-id"),
)

SEED_ORGANIZATIONS = (TEST_ORGANIZATION, OTHER_ORGANIZATION)


def seed_organization(db: Session, spec: SeedOrganization) -> bool:
    """Create ``spec`` if missing; returns True when something was created."""
    set_tenant(db, spec.id, spec.owner.id)
    created = False
    if db.execute(select(models.Organization.id).where(models.Organization.id == spec.id)).first() is None:
        create_organization_with_owner(
            db, organization_id=spec.id, user_id=spec.owner.id, name=spec.name, slug=spec.slug,
            description=spec.description, owner_email=spec.owner.email, owner_name=spec.owner.name,
            given_name=spec.owner.given_name, family_name=spec.owner.family_name, auth0_id=spec.owner.auth0_id)
        created = True
    else:
        load_initial_data(db, spec.id, spec.owner.id)
    for member in spec.members:
        if db.execute(select(models.User.id).where(models.User.id == member.id)).first() is None:
            db.add(models.User(id=member.id, organization_id=spec.id, email=member.email, name=member.name,
                               given_name=member.given_name, family_name=member.family_name,
                               auth0_id=member.auth0_id, is_superuser=member.is_superuser))
            created = True
    db.flush()
    return created


def seed(db: Session) -> list[str]:
    created = []
    for spec in SEED_ORGANIZATIONS:
        if seed_organization(db, spec):
            created.append(spec.slug)
    return created


def main() -> int:
    try:
        _, url = url_from_env(purpose="tenantapp.seed (run as the admin/owner role, after the migrations)")
    except ConfigError as exc:
        print(f"tenantapp.seed: {exc}", file=sys.stderr)
        return 2
    # NullPool: leave no idle connection behind on what is about to become a template database.
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        missing = set(models.Base.metadata.tables) - set(inspect(engine).get_table_names())
        if missing:
            print(f"tenantapp.seed: {describe(url)} has no tables {sorted(missing)}: run "
                  f"'/usr/bin/python3 -m alembic upgrade head' first", file=sys.stderr)
            return 2
        with Session(engine, future=True) as db:
            created = seed(db)
            db.commit()
    finally:
        engine.dispose()
    what = ", ".join(created) if created else "nothing (already seeded)"
    print(f"tenantapp.seed: {describe(url)}: created {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

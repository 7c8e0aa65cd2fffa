from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...auth import TokenClaims
from ...database import get_db
from ...services.onboarding import create_organization_with_owner
from ...utils import Page
from ..deps import get_current_user, get_onboarding_claims, require_superuser

router = APIRouter(tags=["organizations"])


@router.get("/me", response_model=schemas.UserOut)
def me(user: models.User = Depends(get_current_user)):
    return user


@router.post("/onboarding", response_model=schemas.OrganizationOut, status_code=status.HTTP_201_CREATED)
def onboard(body: schemas.OnboardingRequest, claims: TokenClaims = Depends(get_onboarding_claims),
            db: Session = Depends(get_db)):
    """Create an organisation for a user who just signed up, with that user as its first administrator."""
    if claims.organization_id is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="this token already belongs to an organization")
    try:
        organization, _ = create_organization_with_owner(
            db, name=body.organization.name, description=body.organization.description, slug=body.organization.slug,
            owner_email=body.email, owner_name=body.name, given_name=body.given_name, family_name=body.family_name,
            auth0_id=claims.subject)
        db.commit()
    except IntegrityError:
        db.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail="organization slug is already taken") from None
    return organization


@router.get("/organizations/current", response_model=schemas.OrganizationOut)
def current_organization(user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    return crud.get_organization(db, user.organization_id)


@router.patch("/organizations/current", response_model=schemas.OrganizationOut)
def update_organization(body: schemas.OrganizationUpdate, user: models.User = Depends(require_superuser),
                        db: Session = Depends(get_db)):
    organization = crud.get_organization(db, user.organization_id)
    for key, value in body.dict(exclude_unset=True).items():
        setattr(organization, key, value)
    db.commit()
    return organization


@router.get("/statuses", response_model=list[schemas.StatusOut])
def list_statuses(entity_type: str | None = None, user: models.User = Depends(get_current_user),
                  db: Session = Depends(get_db)):
    items, _ = crud.statuses.list(db, page=Page(0, 1000), sort="name", filters={"entity_type": entity_type})
    return items


@router.get("/behaviors", response_model=list[schemas.BehaviorOut])
def list_behaviors(user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    items, _ = crud.behaviors.list(db, page=Page(0, 1000))
    return items


@router.post("/behaviors", response_model=schemas.BehaviorOut, status_code=status.HTTP_201_CREATED)
def create_behavior(body: schemas.BehaviorCreate, user: models.User = Depends(get_current_user),
                    db: Session = Depends(get_db)):
    behavior, created = crud.get_or_create_behavior(db, user.organization_id, body.name)
    if not created:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="a behavior with this name exists")
    behavior.description = body.description
    db.commit()
    return behavior

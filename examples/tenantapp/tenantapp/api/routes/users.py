import uuid

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...database import get_db
from ...utils import Page
from ..deps import get_current_user, not_found, page_params, require_superuser

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[schemas.UserOut])
def list_users(response: Response, search: str | None = None, sort: str | None = None,
               page: Page = Depends(page_params), user: models.User = Depends(get_current_user),
               db: Session = Depends(get_db)):
    try:
        items, total = crud.users.list(db, page=page, sort=sort, search=search)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("", response_model=schemas.UserOut, status_code=status.HTTP_201_CREATED)
def invite_user(body: schemas.UserCreate, admin: models.User = Depends(require_superuser),
                db: Session = Depends(get_db)):
    try:
        user = crud.users.create(db, organization_id=admin.organization_id, **body.dict())
        db.commit()
    except IntegrityError:
        db.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail="a user with this e-mail or identity exists") from None
    return user


@router.get("/{user_id}", response_model=schemas.UserOut)
def get_user(user_id: uuid.UUID, user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    found = crud.users.get(db, user_id)
    if found is None:
        raise not_found("user")
    return found


@router.patch("/{user_id}", response_model=schemas.UserOut)
def update_user(user_id: uuid.UUID, body: schemas.UserUpdate, user: models.User = Depends(get_current_user),
                db: Session = Depends(get_db)):
    target = crud.users.get(db, user_id)
    if target is None:
        raise not_found("user")
    changes = body.dict(exclude_unset=True)
    privileged = {"is_active", "is_superuser"} & changes.keys()
    if target.id != user.id and not user.is_superuser:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="you may only edit your own profile")
    if privileged and not user.is_superuser:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="administrator rights required")
    if target.id == user.id and (changes.get("is_superuser") is False or changes.get("is_active") is False):
        raise HTTPException(status.HTTP_409_CONFLICT, detail="you cannot demote or deactivate yourself")
    crud.users.update(db, target, changes)
    db.commit()
    return target


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def deactivate_user(user_id: uuid.UUID, admin: models.User = Depends(require_superuser),
                    db: Session = Depends(get_db)):
    """Users are deactivated, not deleted: their projects and runs keep referring to them."""
    target = crud.users.get(db, user_id)
    if target is None:
        raise not_found("user")
    if target.id == admin.id:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="you cannot demote or deactivate yourself")
    target.is_active = False
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

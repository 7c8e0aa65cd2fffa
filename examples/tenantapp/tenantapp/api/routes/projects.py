import uuid

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...database import get_db
from ...utils import Page
from ..deps import get_current_user, not_found, page_params

router = APIRouter(prefix="/projects", tags=["projects"])


@router.get("", response_model=list[schemas.ProjectOut])
def list_projects(response: Response, search: str | None = None, sort: str | None = None,
                  is_active: bool | None = None, page: Page = Depends(page_params),
                  user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    try:
        items, total = crud.projects.list(db, page=page, sort=sort, search=search, filters={"is_active": is_active})
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("", response_model=schemas.ProjectOut, status_code=status.HTTP_201_CREATED)
def create_project(body: schemas.ProjectCreate, user: models.User = Depends(get_current_user),
                   db: Session = Depends(get_db)):
    project = crud.projects.create(db, organization_id=user.organization_id, owner_id=user.id, **body.dict())
    db.commit()
    return project


@router.get("/{project_id}", response_model=schemas.ProjectOut)
def get_project(project_id: uuid.UUID, user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    project = crud.projects.get(db, project_id)
    if project is None:
        raise not_found("project")
    return project


@router.patch("/{project_id}", response_model=schemas.ProjectOut)
def update_project(project_id: uuid.UUID, body: schemas.ProjectUpdate, user: models.User = Depends(get_current_user),
                   db: Session = Depends(get_db)):
    project = crud.projects.get(db, project_id)
    if project is None:
        raise not_found("project")
    if project.owner_id != user.id and not user.is_superuser:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only the owner or an administrator may edit")
    crud.projects.update(db, project, body.dict(exclude_unset=True))
    db.commit()
    return project


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project_id: uuid.UUID, user: models.User = Depends(get_current_user),
                   db: Session = Depends(get_db)):
    project = crud.projects.get(db, project_id)
    if project is None:
        raise not_found("project")
    if project.owner_id != user.id and not user.is_superuser:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="only the owner or an administrator may delete")
    crud.projects.delete(db, project)  # test sets, cases and runs go with it (ON DELETE CASCADE)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

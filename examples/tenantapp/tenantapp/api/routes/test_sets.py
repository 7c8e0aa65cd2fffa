import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...database import get_db
from ...services import test_sets as service
from ...utils import Page
from ..deps import get_current_user, not_found, page_params

router = APIRouter(tags=["test sets"])


def _test_set(db: Session, test_set_id: uuid.UUID) -> models.TestSet:
    test_set = crud.test_sets.get(db, test_set_id)
    if test_set is None:
        raise not_found("test set")
    return test_set


@router.get("/test-sets", response_model=list[schemas.TestSetOut])
def list_test_sets(response: Response, project_id: uuid.UUID | None = None, search: str | None = None,
                   sort: str | None = None, page: Page = Depends(page_params),
                   user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    try:
        items, total = crud.test_sets.list(db, page=page, sort=sort, search=search,
                                           filters={"project_id": project_id})
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("/test-sets", response_model=schemas.TestSetOut, status_code=status.HTTP_201_CREATED)
def create_test_set(body: schemas.TestSetCreate, user: models.User = Depends(get_current_user),
                    db: Session = Depends(get_db)):
    # The project lookup goes through RLS: another tenant's project id is "not found", and even if this check were
    # missing the composite foreign key (organization_id, project_id) would refuse the row.
    if crud.projects.get(db, body.project_id) is None:
        raise not_found("project")
    draft = crud.get_status(db, "test_set", "Draft")
    test_set = crud.test_sets.create(db, organization_id=user.organization_id, status_id=draft.id if draft else None,
                                     **body.dict())
    db.commit()
    return test_set


@router.get("/test-sets/{test_set_id}", response_model=schemas.TestSetOut)
def get_test_set(test_set_id: uuid.UUID, user: models.User = Depends(get_current_user),
                 db: Session = Depends(get_db)):
    return _test_set(db, test_set_id)


@router.patch("/test-sets/{test_set_id}", response_model=schemas.TestSetOut)
def update_test_set(test_set_id: uuid.UUID, body: schemas.TestSetUpdate,
                    user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    test_set = _test_set(db, test_set_id)
    changes = body.dict(exclude_unset=True)
    if changes.get("status_id") is not None:
        status_row = crud.statuses.get(db, changes["status_id"])
        if status_row is None or status_row.entity_type != "test_set":
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail="unknown test set status")
        test_set.archived_at = datetime.now(timezone.utc) if status_row.name == "Archived" else None
    crud.test_sets.update(db, test_set, changes)
    db.commit()
    return test_set


@router.delete("/test-sets/{test_set_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_test_set(test_set_id: uuid.UUID, user: models.User = Depends(get_current_user),
                    db: Session = Depends(get_db)):
    crud.test_sets.delete(db, _test_set(db, test_set_id))
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/test-sets/{test_set_id}/test-cases", response_model=list[schemas.TestCaseOut])
def list_test_cases(test_set_id: uuid.UUID, response: Response, sort: str | None = None,
                    page: Page = Depends(page_params), user: models.User = Depends(get_current_user),
                    db: Session = Depends(get_db)):
    _test_set(db, test_set_id)
    try:
        items, total = crud.test_cases.list(db, page=page, sort=sort, filters={"test_set_id": test_set_id})
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("/test-sets/{test_set_id}/test-cases", response_model=schemas.TestCaseOut,
             status_code=status.HTTP_201_CREATED)
def add_test_case(test_set_id: uuid.UUID, body: schemas.TestCaseCreate,
                  user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    test_set = _test_set(db, test_set_id)
    created: list[uuid.UUID] = []
    service.import_test_cases(db, test_set=test_set, user=user, items=[body], created_ids=created)
    if not created:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="this prompt is already in the test set")
    db.commit()
    return crud.test_cases.get(db, created[0])


@router.post("/test-sets/{test_set_id}/import", response_model=schemas.ImportResult)
def import_test_cases(test_set_id: uuid.UUID, body: schemas.TestCaseImport,
                      user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    result = service.import_test_cases(db, test_set=_test_set(db, test_set_id), user=user, items=body.test_cases)
    db.commit()
    return result


@router.get("/test-sets/{test_set_id}/stats", response_model=schemas.TestSetStats)
def test_set_stats(test_set_id: uuid.UUID, user: models.User = Depends(get_current_user),
                   db: Session = Depends(get_db)):
    return service.stats(db, _test_set(db, test_set_id))


@router.get("/test-sets/{test_set_id}/export.csv")
def export_test_set(test_set_id: uuid.UUID, user: models.User = Depends(get_current_user),
                    db: Session = Depends(get_db)):
    test_set = _test_set(db, test_set_id)
    # Materialise before returning: the session (and its tenant scope) ends with the request, while a
    # StreamingResponse body would be consumed afterwards.
    chunks = list(service.export_csv(db, test_set))
    headers = {"Content-Disposition": f'attachment; filename="test-set-{test_set.id}.csv"'}
    return StreamingResponse(iter(chunks), media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/test-cases/{test_case_id}", response_model=schemas.TestCaseOut)
def get_test_case(test_case_id: uuid.UUID, user: models.User = Depends(get_current_user),
                  db: Session = Depends(get_db)):
    case = crud.test_cases.get(db, test_case_id)
    if case is None:
        raise not_found("test case")
    return case


@router.patch("/test-cases/{test_case_id}", response_model=schemas.TestCaseOut)
def update_test_case(test_case_id: uuid.UUID, body: schemas.TestCaseUpdate,
                     user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    case = crud.test_cases.get(db, test_case_id)
    if case is None:
        raise not_found("test case")
    changes = body.dict(exclude_unset=True)
    if "behavior" in changes:
        name = changes.pop("behavior")
        case.behavior_id = crud.get_or_create_behavior(db, user.organization_id, name)[0].id if name else None
    if changes.get("status_id") is not None:
        status_row = crud.statuses.get(db, changes["status_id"])
        if status_row is None or status_row.entity_type != "test_case":
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail="unknown test case status")
    crud.test_cases.update(db, case, changes)
    db.commit()
    db.refresh(case)
    return case


@router.delete("/test-cases/{test_case_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_test_case(test_case_id: uuid.UUID, user: models.User = Depends(get_current_user),
                     db: Session = Depends(get_db)):
    case = crud.test_cases.get(db, test_case_id)
    if case is None:
        raise not_found("test case")
    crud.test_cases.delete(db, case)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

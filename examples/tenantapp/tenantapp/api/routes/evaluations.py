import uuid

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...ai.client import AIClient, get_ai_client
from ...config import get_settings
from ...database import get_db
from ...services import evaluation
from ...services.generation import GenerationError, generate_test_cases
from ...utils import Page
from ..deps import get_current_user, not_found, page_params

router = APIRouter(tags=["evaluation"])


def _run(db: Session, run_id: uuid.UUID) -> models.EvaluationRun:
    run = crud.evaluation_runs.get(db, run_id)
    if run is None:
        raise not_found("evaluation run")
    return run


@router.post("/evaluation-runs", response_model=schemas.EvaluationRunOut, status_code=status.HTTP_201_CREATED)
def start_run(body: schemas.EvaluationRunCreate, user: models.User = Depends(get_current_user),
              db: Session = Depends(get_db), client: AIClient = Depends(get_ai_client)):
    """Create and execute a run. It runs inside the request to keep the example self-contained; a production
    deployment would hand it to a worker queue and return 202."""
    test_set = crud.test_sets.get(db, body.test_set_id)
    if test_set is None:
        raise not_found("test set")
    if test_set.archived_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="test set is archived")
    run = evaluation.create_run(db, test_set=test_set, user=user, model_name=body.model_name)
    settings = get_settings()
    evaluation.execute_run(db, run, client, threshold=settings.evaluation_pass_threshold,
                           backoff_seconds=settings.ai_retry_backoff_seconds)
    db.commit()
    return run


@router.get("/evaluation-runs", response_model=list[schemas.EvaluationRunOut])
def list_runs(response: Response, test_set_id: uuid.UUID | None = None, sort: str | None = None,
              page: Page = Depends(page_params), user: models.User = Depends(get_current_user),
              db: Session = Depends(get_db)):
    try:
        items, total = crud.evaluation_runs.list(db, page=page, sort=sort, filters={"test_set_id": test_set_id})
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    return items


@router.get("/evaluation-runs/{run_id}", response_model=schemas.EvaluationRunOut)
def get_run(run_id: uuid.UUID, user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    return _run(db, run_id)


@router.get("/evaluation-runs/{run_id}/results", response_model=list[schemas.EvaluationResultOut])
def list_results(run_id: uuid.UUID, response: Response, failed_only: bool = False,
                 page: Page = Depends(page_params), user: models.User = Depends(get_current_user),
                 db: Session = Depends(get_db)):
    _run(db, run_id)
    stmt = select(models.EvaluationResult).where(models.EvaluationResult.run_id == run_id)
    if failed_only:
        stmt = stmt.where(models.EvaluationResult.passed.is_(False))
    rows = db.execute(stmt.order_by(models.EvaluationResult.id).offset(page.offset).limit(page.limit)).scalars()
    return list(rows)


@router.get("/evaluation-runs/{run_id}/report", response_model=schemas.EvaluationReport)
def run_report(run_id: uuid.UUID, user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    return evaluation.build_report(db, _run(db, run_id))


@router.post("/ai/generate-test-cases", response_model=schemas.GenerateTestCasesResult,
             status_code=status.HTTP_201_CREATED)
def generate(body: schemas.GenerateTestCasesRequest, user: models.User = Depends(get_current_user),
             db: Session = Depends(get_db), client: AIClient = Depends(get_ai_client)):
    test_set = crud.test_sets.get(db, body.test_set_id)
    if test_set is None:
        raise not_found("test set")
    try:
        result = generate_test_cases(db, client, test_set=test_set, user=user, request=body,
                                     backoff_seconds=get_settings().ai_retry_backoff_seconds)
    except GenerationError as exc:
        db.rollback()
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, detail=str(exc)) from None
    db.commit()
    return result

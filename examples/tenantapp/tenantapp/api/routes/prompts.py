import uuid

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy.orm import Session

from ... import crud, models, schemas
from ...database import get_db
from ...utils import Page
from ..deps import get_current_user, not_found, page_params

router = APIRouter(prefix="/prompts", tags=["prompts"])


@router.get("", response_model=list[schemas.PromptOut])
def list_prompts(response: Response, search: str | None = None, language_code: str | None = None,
                 sort: str | None = None, page: Page = Depends(page_params),
                 user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    try:
        items, total = crud.prompts.list(db, page=page, sort=sort, search=search,
                                         filters={"language_code": language_code})
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=str(exc)) from None
    response.headers["X-Total-Count"] = str(total)
    return items


@router.post("", response_model=schemas.PromptOut, status_code=status.HTTP_201_CREATED)
def create_prompt(body: schemas.PromptCreate, user: models.User = Depends(get_current_user),
                  db: Session = Depends(get_db)):
    prompt = crud.prompts.create(db, organization_id=user.organization_id, created_by_id=user.id, **body.dict())
    db.commit()
    return prompt


@router.get("/{prompt_id}", response_model=schemas.PromptOut)
def get_prompt(prompt_id: uuid.UUID, user: models.User = Depends(get_current_user), db: Session = Depends(get_db)):
    prompt = crud.prompts.get(db, prompt_id)
    if prompt is None:
        raise not_found("prompt")
    return prompt


@router.patch("/{prompt_id}", response_model=schemas.PromptOut)
def update_prompt(prompt_id: uuid.UUID, body: schemas.PromptUpdate, user: models.User = Depends(get_current_user),
                  db: Session = Depends(get_db)):
    prompt = crud.prompts.get(db, prompt_id)
    if prompt is None:
        raise not_found("prompt")
    crud.prompts.update(db, prompt, body.dict(exclude_unset=True))
    db.commit()
    return prompt

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ... import __version__
from ...database import get_db

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/health/db")
def health_db(db: Session = Depends(get_db)) -> dict:
    """Readiness: the database answers and reports its schema revision (the app role may read alembic_version)."""
    try:
        revision = db.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    except SQLAlchemyError:
        raise HTTPException(503, detail="database unavailable") from None
    return {"status": "ok", "revision": revision}

"""The FastAPI application. ``uvicorn tenantapp.main:app`` serves it; tests build their own with ``create_app()``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from . import __version__
from .ai.client import AIServiceError
from .api.routes import evaluations, health, organizations, projects, prompts, test_sets, users
from .config import get_settings


def create_app() -> FastAPI:
    settings = get_settings()
    logging.getLogger("tenantapp").setLevel(settings.log_level)
    app = FastAPI(title="tenantapp", version=__version__,
                  description="Multi-tenant evaluation service: the example suite for testshard.")
    for module in (health, organizations, users, projects, prompts, test_sets, evaluations):
        app.include_router(module.router)

    @app.exception_handler(AIServiceError)
    async def ai_unavailable(request: Request, exc: AIServiceError) -> JSONResponse:
        # 503 when retrying later may help (rate limit, outage), 502 when the upstream answer itself was bad.
        return JSONResponse(status_code=503 if exc.retryable else 502,
                            content={"detail": f"AI service error: {exc}"})

    return app


app = create_app()

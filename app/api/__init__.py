"""JSON API, version 1: one router module per resource."""

from fastapi import APIRouter

from app.api import analyses, brain, lab, models, server

router = APIRouter(prefix="/api/v1")
router.include_router(models.router)
router.include_router(analyses.router)
router.include_router(brain.router)
router.include_router(server.router)
router.include_router(lab.router)

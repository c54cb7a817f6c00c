"""GET /api/v1/brain/...: the sourced facts about the ventral stream that the comparison rests on."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.brain import Area, Citation, Comparison, load_areas, load_citations, load_comparisons

router = APIRouter(prefix="/brain", tags=["brain"])


class AreasPublic(BaseModel):
    data: list[Area]
    count: int
    citations: list[Citation]


class ComparisonsPublic(BaseModel):
    data: list[Comparison]
    count: int


@router.get(
    "/areas",
    response_model=AreasPublic,
    summary="The ventral-stream areas, eye to IT, with their facts",
    description="Every fact carries its source and whether it was read in the source (verified) or computed "
    "from the source's data (derived, with the method). Unverified values are not served.",
)
def list_areas() -> AreasPublic:
    areas = list(load_areas())
    cited = {ref for area in areas for fact in area.facts for ref in fact.refs}
    citations = [citation for key, citation in load_citations().items() if key in cited]
    return AreasPublic(data=areas, count=len(areas), citations=citations)


@router.get("/comparisons", response_model=ComparisonsPublic, summary="Brain-versus-network facts worth showing")
def list_comparisons() -> ComparisonsPublic:
    comparisons = list(load_comparisons())
    return ComparisonsPublic(data=comparisons, count=len(comparisons))

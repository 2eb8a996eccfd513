from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import Session

from api.deps import SessionDep
from cic.models.catalog import (
    CatalogModel,
    ModelKind,
    ModelPublic,
    PricePublic,
    ReferencePricePublic,
    RegionPublic,
)
from cic.services import catalog

router = APIRouter(tags=["catalog"])


def _model_public(session: Session, m: CatalogModel) -> ModelPublic:
    prices = catalog.prices_in_force(session, m.id)
    return ModelPublic(
        id=m.id,
        name=m.name,
        family=m.family,
        kind=ModelKind(m.kind),
        context_length=m.context_length,
        vram_gb=m.vram_gb,
        provider=m.provider,
        prices=[
            PricePublic(
                region=r,
                input_per_1m=p.input_per_1m_micros / 1e6,
                output_per_1m=p.output_per_1m_micros / 1e6,
                reserved_per_tps_month=p.reserved_tps_month_micros / 1e6,
            )
            for r, p in sorted(prices.items())
        ],
        reference=ReferencePricePublic(
            model=m.reference_model,
            input_per_1m=m.reference_input_per_1m_micros / 1e6,
            output_per_1m=m.reference_output_per_1m_micros / 1e6,
        )
        if m.reference_model
        else None,
    )


@router.get("/regions", response_model=list[RegionPublic])
def list_regions(session: SessionDep) -> list[RegionPublic]:
    """Regions you can place an environment in, with where the data stays."""
    return [RegionPublic.model_validate(r, from_attributes=True) for r in catalog.list_regions(session)]


@router.get("/models", response_model=list[ModelPublic])
def list_models(session: SessionDep) -> list[ModelPublic]:
    """The model catalog with the prices in force per region (USD per 1M tokens)."""
    return [_model_public(session, m) for m in catalog.list_models(session)]


@router.get("/models/{model_id}", response_model=ModelPublic)
def get_model(model_id: str, session: SessionDep) -> ModelPublic:
    return _model_public(session, catalog.get_model(session, model_id))

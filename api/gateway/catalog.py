"""The models and prices the data plane needs, held in memory and refreshed in the background."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from cic.models import CatalogModel, ModelPrice


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    kind: str  # chat | completion | embedding
    context_length: int
    created: int


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m_micros: int
    output_per_1m_micros: int

    def cost_picousd(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact cost in pico-dollars: tokens × micro-dollars per million tokens."""
        return prompt_tokens * self.input_per_1m_micros + completion_tokens * self.output_per_1m_micros


@dataclass
class _PriceHistory:
    starts: list[float] = field(default_factory=list)  # effective_from, epoch seconds, ascending
    prices: list[Price] = field(default_factory=list)

    def at(self, ts: float) -> Price | None:
        i = bisect.bisect_right(self.starts, ts) - 1
        return self.prices[i] if i >= 0 else None


@dataclass(frozen=True)
class CatalogSnapshot:
    models: dict[str, ModelInfo]
    prices: dict[tuple[str, str], _PriceHistory]

    def price(self, model: str, region: str, at: float) -> Price | None:
        """The price in force for ``model`` in ``region`` at epoch second ``at``."""
        history = self.prices.get((model, region))
        return history.at(at) if history else None


def load_catalog(engine: Engine) -> CatalogSnapshot:
    with Session(engine) as session:
        models = {
            m.id: ModelInfo(m.id, m.kind, m.context_length, int(m.created_at.timestamp()))
            for m in session.exec(select(CatalogModel).where(col(CatalogModel.active).is_(True)))
        }
        prices: dict[tuple[str, str], _PriceHistory] = {}
        rows = session.exec(select(ModelPrice).order_by(col(ModelPrice.effective_from)))
        for p in rows:
            h = prices.setdefault((p.model_id, p.region_code), _PriceHistory())
            start: datetime = p.effective_from
            h.starts.append(start.timestamp())
            h.prices.append(Price(p.input_per_1m_micros, p.output_per_1m_micros))
    return CatalogSnapshot(models=models, prices=prices)

"""The launch catalog: regions, models and their list prices (USD per 1M tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal


@dataclass(frozen=True)
class RegionSeed:
    code: str
    name: str
    country: str
    residency_note: str
    price_factor: Decimal  # regional multiplier on the base price (GPU cost differs by region)


@dataclass(frozen=True)
class ModelSeed:
    id: str
    name: str
    family: str
    kind: str
    context_length: int
    vram_gb: int
    hf_repo: str
    input_per_1m: Decimal
    output_per_1m: Decimal
    reference: str  # an OpenAI model of the same class (REFERENCE_PRICES)


# OpenAI's list prices (USD per 1M input / output tokens), for "savings vs OpenAI list price".
REFERENCE_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "gpt-3.5-turbo": (Decimal("0.50"), Decimal("1.50")),
    "text-embedding-3-small": (Decimal("0.02"), Decimal("0")),
}

# Reserved capacity: a token per second held for a (30-day) month is 2.592M tokens of capacity; the
# reservation costs this share of those tokens at the model's output list price, on top of usage.
RESERVED_SHARE = Decimal("0.20")
SECONDS_PER_MONTH = Decimal(30 * 24 * 3600)


REGIONS: tuple[RegionSeed, ...] = (
    RegionSeed(
        "in-mumbai",
        "India (Mumbai)",
        "IN",
        "Prompts and completions are processed and stored only in India.",
        Decimal("1.00"),
    ),
    RegionSeed(
        "us-east",
        "US East (N. Virginia)",
        "US",
        "Prompts and completions are processed and stored only in the United States.",
        Decimal("1.00"),
    ),
    RegionSeed("eu-west", "EU West (Ireland)", "IE", "Prompts and completions stay in the EU (GDPR).", Decimal("1.10")),
    RegionSeed(
        "ap-singapore",
        "Asia Pacific (Singapore)",
        "SG",
        "Prompts and completions are processed and stored only in Singapore.",
        Decimal("1.05"),
    ),
)

MODELS: tuple[ModelSeed, ...] = (
    ModelSeed(
        "llama-3-8b",
        "Llama 3 8B Instruct",
        "llama",
        "chat",
        8192,
        16,
        "meta-llama/Meta-Llama-3-8B-Instruct",
        Decimal("0.05"),
        Decimal("0.05"),
        "gpt-4o-mini",
    ),
    ModelSeed(
        "llama-3-70b",
        "Llama 3 70B Instruct",
        "llama",
        "chat",
        8192,
        140,
        "meta-llama/Meta-Llama-3-70B-Instruct",
        Decimal("0.59"),
        Decimal("0.79"),
        "gpt-4o",
    ),
    ModelSeed(
        "mistral-7b",
        "Mistral 7B Instruct v0.3",
        "mistral",
        "chat",
        32768,
        15,
        "mistralai/Mistral-7B-Instruct-v0.3",
        Decimal("0.05"),
        Decimal("0.05"),
        "gpt-4o-mini",
    ),
    ModelSeed(
        "mixtral-8x7b",
        "Mixtral 8x7B Instruct",
        "mistral",
        "chat",
        32768,
        94,
        "mistralai/Mixtral-8x7B-Instruct-v0.1",
        Decimal("0.24"),
        Decimal("0.24"),
        "gpt-3.5-turbo",
    ),
    ModelSeed(
        "qwen-2.5-7b",
        "Qwen 2.5 7B Instruct",
        "qwen",
        "chat",
        32768,
        16,
        "Qwen/Qwen2.5-7B-Instruct",
        Decimal("0.06"),
        Decimal("0.06"),
        "gpt-4o-mini",
    ),
    ModelSeed(
        "qwen-2.5-72b",
        "Qwen 2.5 72B Instruct",
        "qwen",
        "chat",
        32768,
        145,
        "Qwen/Qwen2.5-72B-Instruct",
        Decimal("0.60"),
        Decimal("0.80"),
        "gpt-4o",
    ),
    ModelSeed(
        "gemma-7b",
        "Gemma 7B Instruct",
        "gemma",
        "chat",
        8192,
        17,
        "google/gemma-7b-it",
        Decimal("0.05"),
        Decimal("0.05"),
        "gpt-4o-mini",
    ),
    ModelSeed(
        "phi-3-mini",
        "Phi-3 Mini 4K Instruct",
        "phi",
        "chat",
        4096,
        8,
        "microsoft/Phi-3-mini-4k-instruct",
        Decimal("0.03"),
        Decimal("0.03"),
        "gpt-4o-mini",
    ),
    ModelSeed(
        "phi-3-medium",
        "Phi-3 Medium 4K Instruct",
        "phi",
        "chat",
        4096,
        28,
        "microsoft/Phi-3-medium-4k-instruct",
        Decimal("0.14"),
        Decimal("0.14"),
        "gpt-4o-mini",
    ),
    ModelSeed(
        "all-minilm-l6-v2",
        "all-MiniLM-L6-v2",
        "sentence-transformers",
        "embedding",
        512,
        1,
        "sentence-transformers/all-MiniLM-L6-v2",
        Decimal("0.01"),
        Decimal("0"),
        "text-embedding-3-small",
    ),
)


def reserved_tps_month(output_per_1m: Decimal) -> Decimal:
    """USD per token/s per month of reserved capacity."""
    return output_per_1m * SECONDS_PER_MONTH / 1_000_000 * RESERVED_SHARE


def micros(usd: Decimal) -> int:
    """USD to integer micro-dollars (half-even rounding below a micro-dollar)."""
    return int((usd * 1_000_000).to_integral_value(ROUND_HALF_EVEN))

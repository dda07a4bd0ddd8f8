"""What a model call cost, priced once, when it is recorded.

A :class:`PriceTable` turns (provider, model, usage) into a :class:`~pytest_llmwb.Cost`
whose ``source`` names the table and its version. The default table is a user price
file (``LLMWB_PRICE_FILE`` or the ``llmwb_price_file`` ini key), when there is one, in
front of the maintained `genai-prices <https://github.com/pydantic/genai-prices>`_
package. A model no table knows is not priced (``None``): there is no guess.

Replay serves the recorded cost and never asks a table; ``llmwb reprice`` is the one
explicit way to price a recorded bundle again.

A price file (TOML or JSON) holds prices per million tokens, as decimal strings::

    version = "2026-11"
    currency = "USD"                      # optional, USD by default

    [models."gpt-4o"]                     # or "openai/gpt-4o" for one provider only
    input = "2.50"
    output = "10.00"
    cache_read = "1.25"                   # optional: cached input, else the input price
    cache_write = "3.125"                 # optional: cache creation, else the input price

    [[models."gemini-2.5-pro".tiers]]     # optional: past `above` input tokens, these
    above = 200000                        # prices apply to all the call's tokens
    input = "2.50"
    output = "15.00"
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from .exceptions import PriceFileError
from .schema import Cost, Usage

__all__ = [
    "NO_PRICES",
    "PRICE_FILE_ENV",
    "GenaiPrices",
    "ModelPrice",
    "PriceFile",
    "PriceTable",
    "PriceTables",
    "PriceTier",
    "default_table",
    "load_price_file",
    "price",
    "reprice_bundle",
]

#: Environment variable naming a price file that takes precedence over genai-prices.
PRICE_FILE_ENV = "LLMWB_PRICE_FILE"

_MILLION = Decimal(1_000_000)
_CATEGORIES = ("input", "output", "cache_read", "cache_write")


def _amount(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "") else text


class PriceTable(ABC):
    """A source of prices. ``lookup`` answers one call, or ``None`` when it has no price."""

    @abstractmethod
    def lookup(
        self, provider: str, model: str, usage: Usage, *, at: datetime | None = None
    ) -> Cost | None:
        """The cost of ``usage`` tokens of ``model`` at ``provider`` (at time ``at``)."""

    def describe(self) -> str:
        """The table's name and version, as written in ``Cost.source``."""
        return type(self).__name__


# --- genai-prices ------------------------------------------------------------------------

# OpenTelemetry ``gen_ai.provider.name`` values -> genai-prices provider ids
_GENAI_PROVIDERS = {
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "cohere": "cohere",
    "perplexity": "perplexity",
}


class GenaiPrices(PriceTable):
    """Prices from the installed ``genai-prices`` package (offline, versioned data).

    Provider names are the OpenTelemetry ones the receipts use (``openai``,
    ``anthropic``, ``gcp.gemini``, ``aws.bedrock``, ...) or genai-prices' own ids;
    any other provider (``custom``) is not priced. Token categories map one to one:
    ``input_tokens`` (which includes cached input), ``output_tokens``,
    ``cache_read_input_tokens``, ``cache_creation_input_tokens``. Tiered and
    time-dependent prices follow genai-prices, at the time of the call.
    """

    def __init__(self) -> None:
        import genai_prices

        self._calc = genai_prices.calc_price
        self._usage = genai_prices.Usage
        self.version: str = genai_prices.__version__

    def describe(self) -> str:
        """``genai-prices <version>``."""
        return f"genai-prices {self.version}"

    def lookup(
        self, provider: str, model: str, usage: Usage, *, at: datetime | None = None
    ) -> Cost | None:
        """The genai-prices price of the call, or ``None`` for an unknown provider or model."""
        provider_id = _GENAI_PROVIDERS.get(provider.lower(), provider.lower())
        tokens = self._usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_tokens=usage.cache_creation_input_tokens,
        )
        try:
            result = self._calc(
                tokens,
                model,
                provider_id=provider_id,
                genai_request_timestamp=at or datetime.now(timezone.utc),
            )
        except (LookupError, ValueError, ArithmeticError, UserWarning):
            return None  # unknown provider or model, or usage it cannot price
        source = self.describe()
        if result.auto_update_timestamp is not None:  # prices fetched by UpdatePrices
            source += f" (data of {result.auto_update_timestamp:%Y-%m-%d %H:%M})"
        return Cost(amount=_amount(result.total_price), currency="USD", source=source)


# --- price files -------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTier:
    """Prices per million tokens that apply to every token once input exceeds ``above``."""

    above: int
    prices: Mapping[str, Decimal]


@dataclass(frozen=True)
class ModelPrice:
    """Prices per million tokens of one model; ``cache_*`` default to the input price."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    tiers: tuple[PriceTier, ...] = ()

    def rate(self, category: str, input_tokens: int) -> Decimal:
        """The price of ``category`` for a call with ``input_tokens`` input tokens."""
        for tier in reversed(self.tiers):  # sorted by threshold: the highest passed wins
            if input_tokens > tier.above and category in tier.prices:
                return tier.prices[category]
        value: Decimal | None = getattr(self, category)
        if value is None:
            return self.rate("input", input_tokens)
        return value

    def cost(self, usage: Usage) -> Decimal | None:
        """The cost of ``usage``, or ``None`` when its counts are inconsistent."""
        cached = usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        uncached = usage.input_tokens - cached
        if uncached < 0:
            return None
        n = usage.input_tokens
        total = (
            uncached * self.rate("input", n)
            + usage.cache_read_input_tokens * self.rate("cache_read", n)
            + usage.cache_creation_input_tokens * self.rate("cache_write", n)
            + usage.output_tokens * self.rate("output", n)
        )
        return total / _MILLION


@dataclass(frozen=True)
class PriceFile(PriceTable):
    """A user's price table, loaded from a TOML or JSON file (see the module docs)."""

    version: str
    models: Mapping[str, ModelPrice]
    currency: str = "USD"
    name: str = "prices"
    path: Path | None = field(default=None, compare=False)

    def describe(self) -> str:
        """``<file name> v<version>``."""
        return f"{self.name} v{self.version}"

    def lookup(
        self, provider: str, model: str, usage: Usage, *, at: datetime | None = None
    ) -> Cost | None:
        """The file's price for ``provider/model`` or ``model``, else ``None``."""
        entry = self.models.get(f"{provider}/{model}".lower()) or self.models.get(model.lower())
        if entry is None:
            return None
        amount = entry.cost(usage)
        if amount is None:
            return None
        return Cost(amount=_amount(amount), currency=self.currency, source=self.describe())


def _decimal(value: Any, where: str, path: Path) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _file_error(path, f'{where} must be a decimal string such as "2.50", got {value!r}')
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _file_error(path, f"{where} is not a number: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise _file_error(path, f"{where} must be a finite, non-negative price, got {value!r}")
    return number


def _file_error(path: Path, what: str) -> PriceFileError:
    return PriceFileError(
        f"price file {path}: {what}",
        fix='see docs/pricing.md for the format: version = "..." and '
        '[models."<model>"] with input/output prices per million tokens',
    )


def _check_keys(raw: Mapping[str, Any], allowed: Iterable[str], where: str, path: Path) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _file_error(
            path, f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(allowed)}"
        )


def _model_price(name: str, raw: Any, path: Path) -> ModelPrice:
    where = f"models.{name!r}"
    if not isinstance(raw, Mapping):
        raise _file_error(path, f"{where} must be a table of prices")
    _check_keys(raw, (*_CATEGORIES, "tiers"), where, path)
    for required in ("input", "output"):
        if required not in raw:
            raise _file_error(path, f"{where} has no {required!r} price")
    prices = {key: _decimal(raw[key], f"{where}.{key}", path) for key in _CATEGORIES if key in raw}
    tiers_raw = raw.get("tiers", [])
    if not isinstance(tiers_raw, Sequence) or isinstance(tiers_raw, str):
        raise _file_error(path, f"{where}.tiers must be a list of tables")
    tiers = []
    for i, tier in enumerate(tiers_raw):
        at = f"{where}.tiers[{i}]"
        if not isinstance(tier, Mapping):
            raise _file_error(path, f"{at} must be a table")
        _check_keys(tier, ("above", *_CATEGORIES), at, path)
        above = tier.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above < 0:
            raise _file_error(path, f"{at}.above must be a non-negative token count")
        tier_prices = {k: _decimal(tier[k], f"{at}.{k}", path) for k in _CATEGORIES if k in tier}
        tiers.append(PriceTier(above=above, prices=tier_prices))
    tiers.sort(key=lambda t: t.above)
    return ModelPrice(
        input=prices["input"],
        output=prices["output"],
        cache_read=prices.get("cache_read"),
        cache_write=prices.get("cache_write"),
        tiers=tuple(tiers),
    )


def load_price_file(path: str | os.PathLike[str]) -> PriceFile:
    """Read and check a price file (``.toml``, else JSON)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise PriceFileError(
            f"cannot read price file {file}: {exc.strerror or exc}",
            fix=f"check the path given by {PRICE_FILE_ENV}, llmwb_price_file or --price-file",
        ) from None
    raw: Any
    if file.suffix.lower() == ".toml":
        toml: Any
        try:
            toml = importlib.import_module("tomllib")
        except ModuleNotFoundError:  # pragma: no cover - Python 3.10
            try:
                toml = importlib.import_module("tomli")
            except ModuleNotFoundError:
                raise PriceFileError(
                    f"reading the TOML price file {file} needs Python 3.11+ or tomli",
                    fix="pip install tomli, or write the price file as JSON",
                ) from None
        try:
            raw = toml.loads(data.decode())
        except (toml.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise _file_error(file, f"invalid TOML: {exc}") from None
    else:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise _file_error(file, f"invalid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise _file_error(file, "the top level must be a table")
    _check_keys(raw, ("version", "currency", "models"), "the top level", file)
    version = raw.get("version")
    if not isinstance(version, (str, int)) or isinstance(version, bool) or not str(version):
        raise _file_error(file, 'it needs a version string, e.g. version = "2026-11"')
    currency = raw.get("currency", "USD")
    if not isinstance(currency, str) or not currency:
        raise _file_error(file, "currency must be a currency code such as USD")
    models = raw.get("models", {})
    if not isinstance(models, Mapping):
        raise _file_error(file, "models must be a table of model names")
    return PriceFile(
        version=str(version),
        currency=currency,
        models={str(name).lower(): _model_price(str(name), m, file) for name, m in models.items()},
        name=file.name,
        path=file,
    )


# --- combining tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTables(PriceTable):
    """Several tables, asked in order: the first that prices a call wins."""

    tables: tuple[PriceTable, ...] = ()

    def describe(self) -> str:
        """The tables' descriptions, in order."""
        return " > ".join(t.describe() for t in self.tables) or "no prices"

    def lookup(
        self, provider: str, model: str, usage: Usage, *, at: datetime | None = None
    ) -> Cost | None:
        """The first table's answer that is not ``None``."""
        for table in self.tables:
            cost = table.lookup(provider, model, usage, at=at)
            if cost is not None:
                return cost
        return None


#: A table that prices nothing: ``Run(prices=NO_PRICES)`` records no costs of its own.
NO_PRICES = PriceTables()

_cache_lock = threading.Lock()
_cache: dict[Any, PriceTable] = {}


def default_table(price_file: str | os.PathLike[str] | None = None) -> PriceTable:
    """The price file (``price_file``, else ``LLMWB_PRICE_FILE``) in front of genai-prices.

    Tables are cached per file path and modification time.
    """
    chosen = (os.environ.get(PRICE_FILE_ENV) or None) if price_file is None else price_file
    key: Any = None
    if chosen is not None:
        path = Path(chosen)
        try:
            stat = path.stat()
            key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = (str(path), None, None)  # load_price_file names the problem
    with _cache_lock:
        table = _cache.get(key)
        if table is None:
            tables: list[PriceTable] = []
            if chosen is not None:
                tables.append(load_price_file(chosen))
            if importlib.util.find_spec("genai_prices") is not None:  # needs Python 3.11+
                tables.append(GenaiPrices())
            table = _cache[key] = PriceTables(tuple(tables))
    return table


def price(
    provider: str,
    model: str,
    usage: Usage,
    *,
    table: PriceTable | None = None,
    at: datetime | None = None,
) -> Cost | None:
    """The cost of one call: ``usage`` tokens of ``model`` at ``provider``, at time ``at``.

    ``table`` defaults to :func:`default_table`. Returns ``None`` when no table knows the
    model, or when the response reported no usage at all (an OpenAI stream without
    ``stream_options={"include_usage": True}``): nothing is guessed, not even zero.
    Call it when the call is recorded, never at replay.
    """
    if not usage_reported(usage):
        return None
    return (table if table is not None else default_table()).lookup(provider, model, usage, at=at)


def usage_reported(usage: Usage) -> bool:
    """Whether a response said what it used: a provider usage object, or any count."""
    return bool(usage.raw) or any(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
            usage.reasoning_output_tokens,
        )
    )


# --- pricing a recorded bundle again ----------------------------------------------------


def _describe(cost: Cost | None) -> str:
    return "unpriced" if cost is None else f"{cost.amount} {cost.currency} ({cost.source})"


def _totals(costs: Iterable[Cost | None]) -> str:
    sums: dict[str, Decimal] = {}
    for cost in costs:
        if cost is not None:
            sums[cost.currency] = sums.get(cost.currency, Decimal(0)) + cost.decimal
    return ", ".join(f"{_amount(v)} {k}" for k, v in sorted(sums.items())) or "0"


def reprice_bundle(
    path: str | os.PathLike[str],
    *,
    table: PriceTable | None = None,
    dry_run: bool = False,
    out: TextIO,
) -> int:
    """Price every model_io receipt of a bundle again and rewrite it (``llmwb reprice``).

    Each call is priced at the time it was made (``at`` in ``volatile.json``), by the
    model it reported, else the one it asked for. A receipt the table cannot price
    keeps its recorded cost. The bundle is written again atomically (its manifest
    digests follow), unless ``dry_run`` or nothing changed. Returns the exit code.
    """
    from .schema import ModelIOFact
    from .store import load_bundle, write_bundle

    table = table if table is not None else default_table()
    bundle = load_bundle(path)
    out.write(f"reprice {path} with {table.describe()}\n")
    facts: list[Any] = []
    old_costs: list[Cost | None] = []
    new_costs: list[Cost | None] = []
    changed = 0
    for fact in bundle.facts:
        if not isinstance(fact, ModelIOFact) or fact.response is None:
            facts.append(fact)
            continue
        when = datetime.fromisoformat(fact.at) if fact.at else None
        models = dict.fromkeys(m for m in (fact.response.model, fact.request.model) if m)
        new = None
        for model in models:
            new = price(fact.provider, model, fact.usage, table=table, at=when)
            if new is not None:
                break
        label = f"  seq {fact.seq}  {fact.node}  {fact.provider}/{fact.request.model}: "
        old_costs.append(fact.cost)
        if new is None:
            why = "not in the price table" if usage_reported(fact.usage) else "no usage reported"
            new_costs.append(fact.cost)
            out.write(f"{label}{_describe(fact.cost)} (kept: {why})\n")
            facts.append(fact)
            continue
        new_costs.append(new)
        out.write(f"{label}{_describe(fact.cost)} -> {_describe(new)}\n")
        if new != fact.cost:
            changed += 1
            fact = fact.model_copy(update={"cost": new})
        facts.append(fact)
    out.write(f"total  {_totals(old_costs)} -> {_totals(new_costs)}\n")
    if dry_run:
        out.write(f"{path}: dry run, not written ({changed} receipt(s) would change)\n")
        return 0
    if not changed:
        out.write(f"{path}: no cost changed, not written\n")
        return 0
    manifest = bundle.manifest
    write_bundle(
        path,
        name=manifest.name,
        dag=bundle.dag,
        facts=facts,
        labels=dict(manifest.labels),
        volatile_run=bundle.volatile.get("run") or {},
        blobs={ref: bundle.blob(ref) for ref in manifest.blobs},
    )
    out.write(f"{path}: rewritten ({changed} receipt(s) repriced)\n")
    return 0

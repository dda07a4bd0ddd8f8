"""Price tables: genai-prices, price files taking precedence, tiers, unknown models."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pytest_llmwb import Cost, ModelResponse, Run, Usage
from pytest_llmwb.exceptions import PriceFileError
from pytest_llmwb.pricing import (
    NO_PRICES,
    GenaiPrices,
    PriceTable,
    PriceTables,
    default_table,
    load_price_file,
    price,
)

try:
    import genai_prices
except ImportError:  # genai-prices needs Python >= 3.11; price files work everywhere
    genai_prices = None

GENAI = f"genai-prices {genai_prices.__version__}" if genai_prices is not None else ""
needs_genai = pytest.mark.skipif(
    genai_prices is None, reason="genai-prices is installed on Python >= 3.11 only"
)
USAGE = Usage(input_tokens=1000, output_tokens=100, cache_read_input_tokens=200)

PRICES_TOML = """
version = "2026-11"

[models."gpt-4o"]
input = "2.00"
output = "8.00"

[models."acme/house-model"]
input = "1"
output = 2
cache_read = "0.1"
cache_write = "1.25"

[models."tiered"]
input = "1.00"
output = "10.00"
cache_read = "0.10"

[[models."tiered".tiers]]
above = 200000
input = "2.00"
output = "15.00"
"""


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICES_TOML)
    return path


@pytest.fixture(autouse=True)
def _no_price_file_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMWB_PRICE_FILE", raising=False)


@needs_genai
def test_a_known_model_from_genai_prices() -> None:
    cost = price("openai", "gpt-4o", USAGE)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=200),
        "gpt-4o",
        provider_id="openai",
    ).total_price
    assert cost == Cost(amount=f"{expected.normalize():f}", currency="USD", source=GENAI)
    # cached input is cheaper than the rest: 800 in + 200 cached + 100 out
    assert (
        cost.decimal
        < price("openai", "gpt-4o", Usage(input_tokens=1000, output_tokens=100)).decimal
    )  # type: ignore[union-attr]


@needs_genai
def test_opentelemetry_provider_names_map_to_genai_prices() -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    gemini = price("gcp.gemini", "gemini-2.5-pro", usage)
    assert gemini is not None and gemini.source == GENAI
    assert price("google", "gemini-2.5-pro", usage) == gemini


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-unknown-9000"),
        ("custom", "gpt-4o"),  # an unknown provider is not guessed from the model name
        ("scripted", "m-1"),
    ],
)
def test_unknown_model_or_provider_is_not_priced(provider: str, model: str) -> None:
    assert price(provider, model, USAGE) is None


@needs_genai
def test_genai_prices_tiers_apply_to_every_token_past_the_threshold() -> None:
    table = GenaiPrices()
    below = table.lookup("gcp.gemini", "gemini-2.5-pro", Usage(input_tokens=200_000))
    above = table.lookup("gcp.gemini", "gemini-2.5-pro", Usage(input_tokens=200_001))
    assert below is not None and above is not None
    rate_below = below.decimal / 200_000
    rate_above = above.decimal / 200_001
    assert rate_above > rate_below  # the whole call moves to the higher rate


@needs_genai
def test_the_price_file_takes_precedence_over_genai_prices(price_file: Path) -> None:
    table = default_table(price_file)
    cost = price("openai", "gpt-4o", USAGE, table=table)
    # 800 uncached + 200 cached, both at the input price (no cache_read given), 100 out
    assert cost == Cost(amount="0.0028", currency="USD", source="prices.toml v2026-11")
    # what the file does not know falls through to genai-prices
    claude = price("anthropic", "claude-sonnet-4-5", USAGE, table=table)
    assert claude is not None and claude.source == GENAI


def test_the_price_file_from_the_environment(
    price_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMWB_PRICE_FILE", str(price_file))
    assert price("openai", "gpt-4o", USAGE).source == "prices.toml v2026-11"  # type: ignore[union-attr]


def test_provider_qualified_entries_and_cache_prices(price_file: Path) -> None:
    table = load_price_file(price_file)
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_input_tokens=200_000,
        cache_creation_input_tokens=100_000,
    )
    # 700k in at 1 + 200k cached at 0.1 + 100k written at 1.25 + 1M out at 2
    assert table.lookup("acme", "house-model", usage) == Cost(
        amount="2.845", source="prices.toml v2026-11"
    )
    assert table.lookup("other", "house-model", usage) is None
    inconsistent = Usage(input_tokens=10, cache_read_input_tokens=20)
    assert table.lookup("acme", "house-model", inconsistent) is None


@pytest.mark.parametrize(
    ("input_tokens", "expected"),
    [
        (200_000, "0.2000"),  # at the threshold: the base price
        (200_001, "0.400002"),  # past it: the tier's price for every token
    ],
)
def test_price_file_tiers(price_file: Path, input_tokens: int, expected: str) -> None:
    cost = load_price_file(price_file).lookup("x", "tiered", Usage(input_tokens=input_tokens))
    assert cost is not None and cost.decimal == Decimal(expected)
    # a category the tier leaves out keeps its base price
    cached = Usage(input_tokens=300_000, cache_read_input_tokens=100_000)
    assert load_price_file(price_file).lookup("x", "tiered", cached).decimal == Decimal(  # type: ignore[union-attr]
        "0.41"
    )


def test_a_json_price_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {"version": 3, "currency": "EUR", "models": {"m": {"input": "1", "output": "1"}}}
        )
    )
    assert load_price_file(path).lookup("p", "m", Usage(input_tokens=500_000)) == Cost(
        amount="0.5", currency="EUR", source="prices.json v3"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[models."m"]\ninput = "1"\noutput = "1"\n', "version"),
        ('version = "1"\n[models."m"]\ninput = "1"\n', "no 'output' price"),
        ('version = "1"\n[models."m"]\ninput = "-1"\noutput = "1"\n', "non-negative"),
        ('version = "1"\n[models."m"]\ninput = "x"\noutput = "1"\n', "not a number"),
        (
            'version = "1"\n[models."m"]\ninput = "1"\noutput = "1"\ncache_reed = "1"\n',
            "cache_reed",
        ),
        ('version = "1"\nmodel = {}\n', "unknown key"),
        (
            'version = "1"\n[models."m"]\ninput = "1"\noutput = "1"\ntiers = [{input = "2"}]\n',
            "above",
        ),
        ("version = \n", "invalid TOML"),
    ],
)
def test_a_broken_price_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=message) as info:
        load_price_file(path)
    assert str(path) in str(info.value) and "fix:" in str(info.value)


def test_a_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot read price file"):
        default_table(tmp_path / "nope.toml")


def test_tables_are_asked_in_order() -> None:
    class Fixed(PriceTable):
        def __init__(self, amount: str | None) -> None:
            self.amount = amount

        def lookup(self, provider: str, model: str, usage: Usage, *, at: Any = None) -> Any:
            return None if self.amount is None else Cost(amount=self.amount, source="fixed")

    assert PriceTables((Fixed(None), Fixed("2"), Fixed("3"))).lookup("p", "m", USAGE).amount == "2"  # type: ignore[union-attr]
    assert NO_PRICES.lookup("openai", "gpt-4o", USAGE) is None


# --- at record time, never at replay ----------------------------------------------------------


class Spy(PriceTable):
    """A table that prices everything at 1 USD per call and counts the calls."""

    def __init__(self, amount: str = "1", source: str = "spy v1") -> None:
        self.amount, self.source, self.calls = amount, source, 0
        self.at: list[datetime | None] = []

    def lookup(
        self, provider: str, model: str, usage: Usage, *, at: datetime | None = None
    ) -> Cost | None:
        self.calls += 1
        self.at.append(at)
        return Cost(amount=self.amount, source=self.source)


def _call(run: Run, cost: Any = None) -> ModelResponse:
    return run.model_io(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        lambda request: ModelResponse(
            model="gpt-4o-2024-08-06",
            content="hello",
            usage=Usage(input_tokens=10, output_tokens=2),
        ),
        node="chat",
        provider="openai",
        cost=cost,
    )


def test_a_run_prices_live_calls_when_they_are_recorded() -> None:
    spy = Spy()
    with Run("r", prices=spy) as run:
        _call(run)
    assert run.model_calls[0].cost == Cost(amount="1", source="spy v1")
    assert spy.calls == 1
    assert spy.at[0] is not None and spy.at[0].tzinfo is not None  # the time of the call


@needs_genai
def test_a_run_prices_with_genai_prices_by_default() -> None:
    with Run("r") as run:
        _call(run)
    cost = run.model_calls[0].cost
    assert cost is not None and cost.source == GENAI and cost.decimal > 0


def test_the_cost_callable_wins_and_no_prices_prices_nothing() -> None:
    spy = Spy()
    with Run("r", prices=spy) as run:
        _call(run, cost=lambda req, resp: Cost(amount="9", source="mine"))
    assert run.model_calls[0].cost == Cost(amount="9", source="mine") and spy.calls == 0
    with Run("r", prices=NO_PRICES) as run:
        _call(run)
    assert run.model_calls[0].cost is None


def test_replay_never_prices_again(tmp_path: Path) -> None:
    with Run("r", prices=Spy("1", "old v1")) as run:
        _call(run)
    run.save(tmp_path / "b")
    for mode in ("replay", "new"):
        newer = Spy("2", "new v2")
        with Run("r", mode=mode, replay=tmp_path / "b", prices=newer) as replay:  # type: ignore[arg-type]
            _call(replay)
        assert newer.calls == 0, mode
        assert replay.model_calls[0].cost == Cost(amount="1", source="old v1"), mode


def test_timestamps_of_calls_are_passed_to_the_table() -> None:
    spy = Spy()
    with Run("r", prices=spy) as run:
        _call(run)
    recorded_at = datetime.fromisoformat(run.model_calls[0].at)  # type: ignore[arg-type]
    assert spy.at == [recorded_at]
    assert recorded_at.tzinfo == timezone.utc


def test_request_model_is_tried_when_the_response_model_is_unknown(price_file: Path) -> None:
    table = load_price_file(price_file)
    with Run("r", prices=table) as run:
        run.model_io(
            {"model": "gpt-4o"},
            lambda request: ModelResponse(model="gpt-4o-2099-01-01", usage=Usage(input_tokens=10)),
            provider="openai",
        )
    assert run.model_calls[0].cost == Cost(amount="0.00002", source="prices.toml v2026-11")

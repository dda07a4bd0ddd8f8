"""Tokens and cost rolled up per node, per artifact revision and per run.

Costs are the ones recorded with each model_io receipt; nothing is recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .schema import ArtifactFact, ModelIOFact

__all__ = ["CostSummary", "Spend", "money", "summarize"]


def money(amount: Decimal) -> str:
    """A decimal amount without exponent or trailing zeros: ``0.000055``, ``12``."""
    return f"{amount.normalize():f}"


_TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_output_tokens",
)


@dataclass
class Spend:
    """Calls, tokens by category and cost (per currency) of a set of model calls."""

    calls: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOKEN_KEYS, 0))
    cost: dict[str, Decimal] = field(default_factory=dict)
    unpriced: int = 0

    def add(self, fact: ModelIOFact) -> None:
        """Count one model call."""
        self.calls += 1
        for key in _TOKEN_KEYS:
            self.tokens[key] += getattr(fact.usage, key)
        if fact.cost is None:
            self.unpriced += 1
        else:
            self.cost[fact.cost.currency] = (
                self.cost.get(fact.cost.currency, Decimal(0)) + fact.cost.decimal
            )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.tokens["input_tokens"] + self.tokens["output_tokens"]

    @property
    def amount(self) -> Decimal:
        """The cost in the single currency used (0 when nothing was priced).

        Raises ``ValueError`` when calls were priced in several currencies; read
        :attr:`cost` for those.
        """
        if len(self.cost) > 1:
            raise ValueError(f"costs in several currencies: {sorted(self.cost)}; read .cost")
        return next(iter(self.cost.values()), Decimal(0))

    def describe(self) -> str:
        """``2 calls, 90 tokens, 0.000068 USD``."""
        spent = ", ".join(f"{money(amount)} {cur}" for cur, amount in sorted(self.cost.items()))
        text = f"{self.calls} call(s), {self.total_tokens} tokens"
        if spent:
            text += f", {spent}"
        if self.unpriced:
            text += f" ({self.unpriced} unpriced)"
        return text


@dataclass
class CostSummary:
    """A run's spend: in total, per DAG node and per artifact revision (``name@rev``).

    An artifact revision's spend is that of the model calls it was derived from.
    """

    total: Spend
    by_node: dict[str, Spend]
    by_artifact: dict[str, Spend]

    @property
    def amount(self) -> Decimal:
        """Total cost in the single currency used (see :attr:`Spend.amount`)."""
        return self.total.amount

    @property
    def tokens(self) -> int:
        """Total input plus output tokens."""
        return self.total.total_tokens

    def top_nodes(self, count: int = 3) -> list[tuple[str, Spend]]:
        """The nodes that spent most: by cost, then by tokens."""
        ranked = sorted(
            self.by_node.items(),
            key=lambda item: (sum(item[1].cost.values(), Decimal(0)), item[1].total_tokens),
            reverse=True,
        )
        return ranked[:count]


def summarize(facts: Iterable[Any]) -> CostSummary:
    """Roll up the model_io receipts among ``facts``."""
    facts = list(facts)
    total = Spend()
    by_node: dict[str, Spend] = {}
    by_seq: dict[int, ModelIOFact] = {}
    for fact in facts:
        if isinstance(fact, ModelIOFact):
            total.add(fact)
            by_node.setdefault(fact.node, Spend()).add(fact)
            by_seq[fact.seq] = fact
    by_artifact: dict[str, Spend] = {}
    for fact in facts:
        if isinstance(fact, ArtifactFact):
            spend = Spend()
            for seq in fact.derived_from:
                if seq in by_seq:
                    spend.add(by_seq[seq])
            by_artifact[f"{fact.name}@{fact.revision}"] = spend
    return CostSummary(total=total, by_node=by_node, by_artifact=by_artifact)

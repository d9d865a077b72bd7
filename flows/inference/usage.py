"""Tokens and cost per model, as the servers reported them (never estimated): of a batch-inference job, and of a
research report (its gpt-researcher worker hands back each gateway response's usage and cost header).

Tokens come from each response's ``usage``; the cost from LiteLLM's ``x-litellm-response-cost`` header. vLLM
reports no cost, so a model's cost is known only for the requests whose response carried one, and shown as
unknown where none did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

COST_HEADER = "x-litellm-response-cost"
UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class Usage:
    """What one successful response reported."""

    model: str = UNKNOWN_MODEL
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None  # None: the server reported no cost


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def usage_of(body: Any, cost_header: str | None = None, fallback_model: str | None = None) -> Usage:
    """The usage a response body (and its cost header) reports; zero tokens when it reports none."""
    body = body if isinstance(body, dict) else {}
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    total = _count(usage.get("total_tokens")) or prompt + completion
    model = body.get("model") if isinstance(body.get("model"), str) and body["model"] else fallback_model
    return Usage(model or UNKNOWN_MODEL, prompt, completion, total, parse_cost(cost_header))


def parse_cost(header: str | None) -> float | None:
    """The header's cost in USD, or None when absent or not a non-negative number."""
    try:
        cost = float(header) if header is not None else None
    except ValueError:
        return None
    return cost if cost is not None and cost >= 0 else None


@dataclass
class ModelUsage:
    """The sum over one model's successful responses in one job."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    priced_requests: int = 0  # responses that carried a cost
    cost_usd: float = 0.0  # sum over the priced ones

    def add(self, u: Usage) -> None:
        self.requests += 1
        self.prompt_tokens += u.prompt_tokens
        self.completion_tokens += u.completion_tokens
        self.total_tokens += u.total_tokens
        if u.cost_usd is not None:
            self.priced_requests += 1
            self.cost_usd += u.cost_usd

    @property
    def cost_known(self) -> float | None:
        """The cost when every response reported one, else None."""
        return self.cost_usd if self.requests and self.priced_requests == self.requests else None

    def cost_text(self) -> str:
        if self.priced_requests == 0:
            return "unknown"
        if self.priced_requests == self.requests:
            return f"${self.cost_usd:.6f}"
        return f"${self.cost_usd:.6f} for {self.priced_requests} of {self.requests} requests, rest unknown"


def add_usage(per_model: dict[str, ModelUsage], u: Usage) -> None:
    per_model.setdefault(u.model, ModelUsage()).add(u)


def total_cost(per_model: Mapping[str, ModelUsage]) -> float | None:
    """The cost of everything sent, when every response reported one; None (unknown) otherwise or when none came."""
    costs = [m.cost_known for m in per_model.values()]
    return sum(c for c in costs if c is not None) if costs and None not in costs else None


def ledger_rows(per_model: Mapping[str, ModelUsage]) -> list[tuple[str, int, int, int, int, float | None]]:
    """(model, requests, prompt, completion, priced requests, cost or None) per model, for a ledger's usage table."""
    return [
        (model, m.requests, m.prompt_tokens, m.completion_tokens, m.priced_requests, m.cost_known)
        for model, m in sorted(per_model.items())
    ]


def usage_table(per_model: Mapping[str, ModelUsage]) -> list[str]:
    """A markdown table of (model, requests, prompt, completion, cost), in model order."""
    return [
        "| model | requests | prompt tokens | completion tokens | cost |",
        "|---|---|---|---|---|",
        *(
            f"| {model} | {m.requests} | {m.prompt_tokens} | {m.completion_tokens} | {m.cost_text()} |"
            for model, m in sorted(per_model.items())
        ),
    ]

"""The gateway's routing rules (deployments/litellm/config.yaml) in LiteLLM's real Router, one scenario per rule.

testkit/litellm_routes.py runs in the gateway's own venv (scripts/install.sh --test builds .venv-gateway) and
reports, per scenario, which deployment answered each request; cloud models answer with LiteLLM's mock response,
and vLLM down, OpenRouter's 402 and a provider's 429 are real HTTP answers from loopback servers."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import pytest
import yaml

from testkit.cluster import REPO
from testkit.gateway import GATEWAY_VENV

CONFIG = REPO / "deployments" / "litellm" / "config.yaml"
PYTHON = GATEWAY_VENV / "bin" / "python"


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    if not PYTHON.exists():
        pytest.skip(f"no gateway venv at {GATEWAY_VENV} (scripts/install.sh --test builds it)")
    done = subprocess.run(
        [str(PYTHON), str(REPO / "testkit" / "litellm_routes.py"), str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path_factory.mktemp("litellm-home")), "NO_PROXY": "*"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def limit(model_id: str, key: str) -> Any:
    config = yaml.safe_load(CONFIG.read_text())
    return next(m for m in config["model_list"] if m["model_info"]["id"] == model_id)["litellm_params"][key]


def test_the_local_model_answers_while_vllm_is_up(routes: dict[str, list[str]]) -> None:
    assert routes["vllm_answers"] == ["vllm-starlord"]


def test_vllm_down_or_refusing_falls_back_to_flash(routes: dict[str, list[str]]) -> None:
    assert routes["vllm_down"] == ["gemini-flash-primary"]
    assert routes["provider_429"] == ["gemini-flash-primary"]


def test_vllm_over_its_rate_limit_sends_the_rest_to_flash(routes: dict[str, list[str]]) -> None:
    rpm = limit("vllm-starlord", "rpm")
    assert Counter(routes["vllm_busy"]) == {"vllm-starlord": rpm, "gemini-flash-primary": 1}


def test_context_length_picks_flash_below_128k_and_pro_above(routes: dict[str, list[str]]) -> None:
    assert routes["prompt_40k_tokens"] == ["gemini-flash-primary"]  # over vLLM's window, under 128K
    assert routes["prompt_over_128k_tokens"] == ["gemini-pro-primary"]
    assert routes["flash_prompt_over_128k_tokens"] == ["gemini-pro-primary"]


def test_an_exhausted_budget_moves_to_the_secondary_key_then_to_openrouter(routes: dict[str, list[str]]) -> None:
    primary, secondary = "gemini-flash-primary", "gemini-flash-secondary"
    assert routes["flash_budget_exhausted"] == [primary, secondary, secondary]  # the first answer spends the budget
    assert routes["flash_budgets_both_exhausted"] == [primary, secondary, "openrouter-paid"]


def test_openrouter_without_credits_uses_its_free_tier_in_order(routes: dict[str, list[str]]) -> None:
    assert routes["openrouter_out_of_credits"] == ["openrouter-free-deepseek-v3.1"]
    assert routes["openrouter_free_model_rate_limited"] == ["openrouter-free-grok-4-fast"] * 2


def test_flash_over_its_rate_limit_uses_the_secondary_key(routes: dict[str, list[str]]) -> None:
    rpm = limit("gemini-flash-primary", "rpm")
    assert Counter(routes["flash_rpm_reached"]) == {"gemini-flash-primary": rpm, "gemini-flash-secondary": 1}

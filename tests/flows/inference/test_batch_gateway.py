"""batch-inference through the real gateway: vLLM is down, so the batch goes to the LiteLLM proxy (the cluster's
configuration) in front of a real model server, and the tokens and cost stored are the ones the gateway reported.
Torn connections and 429 storms stay on testkit/inference_openai_server.py (test_inference_runner.py): a real
server cannot be made to produce them on demand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.inference.batch_inference import batch_inference
from flows.inference.ledger import open_ledger
from testkit.artifacts import flow_run_artifacts
from testkit.cluster import free_port
from testkit.gateway import TEST_INPUT_COST, TEST_OUTPUT_COST, Gateway


@pytest.mark.slow
def test_a_batch_falls_back_to_the_real_gateway_and_stores_its_tokens_and_cost(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GATEWAY_KEY", gateway.api_key)
    lines = [
        {"custom_id": f"g{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": f"Name a colour, number {i}."}], "max_tokens": 8}}
        for i in range(3)
    ]  # fmt: skip
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    state = batch_inference(
        str(inp), str(out), base_url=f"http://127.0.0.1:{free_port()}", fallback_url=gateway.url,  # vLLM is down
        fallback_api_key_env="TEST_GATEWAY_KEY", model=gateway.chat_model, on_primary_down="fallback",
        max_wait_s=0, ledger_url=ledger, concurrency=2, return_state=True,
    )  # fmt: skip
    result = state.result()
    assert (result["ok"], result["failed"], result["endpoint"]) == (3, 0, gateway.url)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["g0", "g1", "g2"]
    bodies = [r["response"]["body"] for r in rows]
    assert all(b["choices"][0]["message"]["content"] for b in bodies)  # the tiny model's (noisy) words
    prompt = sum(b["usage"]["prompt_tokens"] for b in bodies)
    completion = sum(b["usage"]["completion_tokens"] for b in bodies)
    assert prompt > 0 and completion > 0
    with open_ledger(ledger).connect() as conn:
        usage = conn.execute(
            "SELECT requests, prompt_tokens, completion_tokens, priced_requests, cost_usd, model"
            " FROM inference_job_usage WHERE job_id = %s",
            (result["job_id"],),
        ).fetchall()
    # One model row; the cost is the gateway's own: the test's prices times the tokens it counted.
    assert len(usage) == 1 and usage[0][:4] == (3, prompt, completion, 3)
    assert usage[0][4] == pytest.approx(prompt * TEST_INPUT_COST + completion * TEST_OUTPUT_COST, rel=1e-6)
    artifacts = flow_run_artifacts(state)
    assert [a.data for a in artifacts["batch-inference-progress"]] == [100.0]
    [summary] = artifacts["batch-inference-summary"]
    assert "| ok | 3 |" in summary.data and "| failed | 0 |" in summary.data and gateway.url in summary.data
    assert f"| {usage[0][5]} | 3 | {prompt} | {completion} | ${usage[0][4]:.6f} |" in summary.data

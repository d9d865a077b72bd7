"""The batch-inference flow under Prefect: ledger row, artifacts, routing to the gateway, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blocks import OpenAICompatibleEndpoint, PostgresLedger
from flows.common.errors import ConfigError, ServiceUnavailable
from flows.inference.batch_inference import batch_inference
from flows.inference.batch_io import read_input
from flows.inference.engines import VllmEngine
from flows.inference.ledger import open_ledger
from flows.inference.runner import run_batch
from testkit.artifacts import flow_run_artifacts
from testkit.inference_openai_server import run_fake_openai


def write_batch(path: Path, n: int, extra: list[str] | None = None) -> Path:
    lines = [
        json.dumps(
            {
                "custom_id": f"q{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": f"hello {i}"}]},
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines + (extra or [])) + "\n")
    return path


JOB_COLUMNS = ("status", "ok", "failed", "endpoint", "tokens", "finished_at")


def job_row(ledger: str, job_id: str) -> dict[str, object]:
    with open_ledger(ledger).connect() as conn:
        row = conn.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM inference_jobs WHERE job_id = %s", (job_id,))
        return dict(zip(JOB_COLUMNS, row.fetchone(), strict=True))


def usage_rows(ledger: str, job_id: str) -> list[tuple[object, ...]]:
    with open_ledger(ledger).connect() as conn:
        return conn.execute(
            "SELECT model, requests, prompt_tokens, completion_tokens, priced_requests, cost_usd"
            " FROM inference_job_usage WHERE job_id = %s ORDER BY model",
            (job_id,),
        ).fetchall()


def test_flow_records_the_job_its_tokens_per_model_and_writes_artifacts(ledger_url: str, tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 10, ["{oops"])
    out = tmp_path / "out.jsonl"
    with run_fake_openai() as primary:
        state = batch_inference(
            str(inp), str(out), base_url=primary.url, model="m", ledger_url=ledger_url, progress_every=1,
            return_state=True,
        )  # fmt: skip
    result = state.result()
    assert result["status"] == "completed_with_errors"
    assert (result["ok"], result["failed"], result["skipped"]) == (10, 1, 0)
    job = job_row(ledger_url, result["job_id"])
    assert (job["status"], job["ok"], job["failed"], job["endpoint"]) == ("completed_with_errors", 10, 1, primary.url)
    assert job["tokens"] == result["tokens"] > 0 and job["finished_at"]
    # The fake answers "echo: hello <i>": 2 prompt and 3 completion tokens per line; vLLM reports no cost.
    assert usage_rows(ledger_url, result["job_id"]) == [("m", 10, 20, 30, 0, None)]
    artifacts = flow_run_artifacts(state)
    assert [a.data for a in artifacts["batch-inference-progress"]] == [100.0]
    [summary_artifact] = artifacts["batch-inference-summary"]
    summary = summary_artifact.data or ""
    assert "| ok | 10 |" in summary and "| failed | 1 |" in summary and "| invalid_json | 1 |" in summary
    assert "| m | 10 | 20 | 30 | unknown |" in summary


def test_the_cost_the_gateway_reports_is_stored_per_model(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    inp = write_batch(tmp_path / "in.jsonl", 4)
    with run_fake_openai() as gateway:
        gateway.response_cost = "0.00125"
        state = batch_inference(
            str(inp), str(tmp_path / "out.jsonl"), base_url=gateway.url, model="gw", ledger_url=ledger,
            return_state=True,
        )  # fmt: skip
    result = state.result()
    assert usage_rows(ledger, result["job_id"]) == [("gw", 4, 8, 12, 4, pytest.approx(0.005))]
    [summary_artifact] = flow_run_artifacts(state)["batch-inference-summary"]
    summary = summary_artifact.data or ""
    assert "| gw | 4 | 8 | 12 | $0.005000 |" in summary


def test_flow_routes_to_the_gateway_when_vllm_is_down(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    inp = write_batch(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out.jsonl"
    with run_fake_openai() as vllm, run_fake_openai() as litellm:
        vllm.down = True
        result = batch_inference(
            str(inp),
            str(out),
            base_url=vllm.url,
            fallback_url=litellm.url,
            on_primary_down="fallback",
            max_wait_s=0.3,
            poll_s=0.1,
            ledger_url=ledger,
        )
        assert result["endpoint"] == litellm.url and result["ok"] == 5
        assert vllm.requests == [] and len(litellm.requests) == 5


def test_a_primary_that_fails_mid_run_hands_the_rest_to_the_gateway(tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 8)
    out = tmp_path / "out.jsonl"
    with run_fake_openai() as vllm, run_fake_openai() as litellm:
        vllm.fail_all = 503  # /health still says ok: the failure shows only on real requests
        result = batch_inference(
            str(inp),
            str(out),
            base_url=vllm.url,
            fallback_url=litellm.url,
            on_primary_down="fallback",
            max_retries=1,
            concurrency=2,
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        )
        assert result["ok"] == 8 and result["failed"] == 0
        assert result["endpoint"] == f"{vllm.url} -> {litellm.url}"
        assert len(litellm.requests) == 8 and len(vllm.requests) <= 2 * 2  # at most the first try per worker
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [f"q{i}" for i in range(8)]


def test_flow_fails_clearly_when_vllm_stays_down_and_records_it(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    inp = write_batch(tmp_path / "in.jsonl", 2)
    with run_fake_openai() as vllm:
        vllm.down = True
        with pytest.raises(ServiceUnavailable, match="is down"):
            batch_inference(
                str(inp),
                str(tmp_path / "out.jsonl"),
                base_url=vllm.url,
                max_wait_s=0.2,
                poll_s=0.1,
                ledger_url=ledger,
            )
    db = open_ledger(ledger)
    with db.connect() as conn:
        rows = conn.execute("SELECT status, error FROM inference_jobs").fetchall()
    assert len(rows) == 1 and rows[0][0] == "failed" and "is down" in rows[0][1]


def test_flow_refuses_duplicates_before_sending_anything(tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 3)
    inp.write_text(inp.read_text() + inp.read_text().splitlines()[1] + "\n")
    with run_fake_openai() as primary:
        with pytest.raises(ConfigError, match="duplicate custom_id values: q1"):
            batch_inference(
                str(inp),
                str(tmp_path / "out.jsonl"),
                base_url=primary.url,
                ledger_url=f"sqlite:///{tmp_path}/l.db",
            )
        assert primary.requests == []
    assert not (tmp_path / "out.jsonl").exists()


def test_an_endpoint_block_gives_url_key_and_model_and_wins_over_the_plain_parameters(
    tmp_path: Path, pg_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "env-key-not-used")
    PostgresLedger(url=pg_ledger_url, password="ledger-pw").save("batch-ledger", overwrite=True)
    unused = tmp_path / "unused.db"
    inp = write_batch(tmp_path / "in.jsonl", 4)
    with run_fake_openai() as vllm:
        # base_url with /v1 (what OpenAI clients want): the batch lines' /v1/... paths must not double it
        block = OpenAICompatibleEndpoint(base_url=f"{vllm.url}/v1/", api_key="vllm-token", chat_model="blocky-model")
        block.save("batch-vllm", overwrite=True)
        result = batch_inference(
            str(inp), str(tmp_path / "out.jsonl"), base_url="http://127.0.0.1:1", ledger_url=f"sqlite:///{unused}",
            endpoint_block="batch-vllm", ledger_block="batch-ledger", max_wait_s=0.5, poll_s=0.1,
        )  # fmt: skip
        assert [path for path, _ in vllm.requests] == ["/v1/chat/completions"] * 4
        assert {body["model"] for _, body in vllm.requests} == {"blocky-model"}
        assert vllm.auth == ["Bearer vllm-token"] * 4
    assert (result["ok"], result["endpoint"]) == (4, vllm.url)
    assert job_row(pg_ledger_url, result["job_id"])["endpoint"] == vllm.url  # the job row is in the block's database
    assert not unused.exists()


def test_a_fallback_block_takes_the_batch_with_its_own_key_and_model_when_vllm_is_down(tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 3)
    with run_fake_openai() as vllm, run_fake_openai() as litellm:
        vllm.down = True
        OpenAICompatibleEndpoint(base_url=f"{vllm.url}/v1", api_key="vllm-token").save("batch-down", overwrite=True)
        gateway = OpenAICompatibleEndpoint(base_url=f"{litellm.url}/v1", api_key="gw-token", chat_model="gw-model")
        gateway.save("batch-gateway", overwrite=True)
        result = batch_inference(
            str(inp), str(tmp_path / "out.jsonl"), endpoint_block="batch-down", fallback_block="batch-gateway",
            on_primary_down="fallback", max_wait_s=0.3, poll_s=0.1, ledger_url=f"sqlite:///{tmp_path / 'l.db'}",
        )  # fmt: skip
        assert vllm.requests == [] and litellm.auth == ["Bearer gw-token"] * 3
        assert {body["model"] for _, body in litellm.requests} == {"gw-model"}
    assert (result["ok"], result["endpoint"]) == (3, litellm.url)


@pytest.mark.parametrize("parameter", ["endpoint_block", "fallback_block"])
def test_an_unknown_endpoint_block_fails_before_any_job_or_request(tmp_path: Path, parameter: str) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 1)
    with pytest.raises(ConfigError, match=f"^{parameter}: no OpenAICompatibleEndpoint block named 'nope'"):
        batch_inference(
            str(inp), str(tmp_path / "o.jsonl"), ledger_url=f"sqlite:///{tmp_path}/l.db", **{parameter: "nope"}
        )
    assert not (tmp_path / "l.db").exists() and not (tmp_path / "o.jsonl").exists()


def test_paths_outside_the_batch_folders_are_refused_before_any_job_or_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, allowed, outside = tmp_path / "data", tmp_path / "allowed", tmp_path / "outside"
    for folder in (data, allowed, outside):
        folder.mkdir()
    monkeypatch.setenv("SWARM_DATA_DIR", str(data))
    monkeypatch.setenv("SWARM_BATCH_ROOTS", str(allowed))
    precious = outside / "precious.txt"
    precious.write_text("not a batch output")
    (allowed / "link.jsonl").symlink_to(precious)
    inp = write_batch(allowed / "in.jsonl", 2)
    ledger = f"sqlite:///{tmp_path}/l.db"
    with run_fake_openai() as primary:
        for input_path, output_path, refused in [
            (str(write_batch(outside / "in.jsonl", 1)), str(allowed / "o.jsonl"), "input_path"),
            (str(inp), str(precious), "output_path"),
            (str(inp), str(allowed / "link.jsonl"), "output_path"),  # a link leading out
            (str(inp), "../outside/precious.txt", "output_path"),  # relative: from the data folder
        ]:
            with pytest.raises(ConfigError, match=f"^{refused} .* is outside this node's batch folders"):
                batch_inference(input_path, output_path, base_url=primary.url, ledger_url=ledger)
        assert primary.requests == [] and not Path(tmp_path / "l.db").exists()
        assert precious.read_text() == "not a batch output"
        # Relative paths are taken from the data folder, and SWARM_BATCH_ROOTS folders are allowed too.
        write_batch(data / "in.jsonl", 2)
        result = batch_inference("in.jsonl", str(allowed / "out.jsonl"), base_url=primary.url, ledger_url=ledger)
    assert result["ok"] == 2 and (allowed / "out.jsonl").exists()


def test_an_existing_file_that_is_no_output_of_this_batch_is_refused_not_truncated(tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    out.write_text("my notes, not JSONL\n")
    ledger = f"sqlite:///{tmp_path}/l.db"
    with run_fake_openai() as primary:
        with pytest.raises(ConfigError, match=r"exists and line 1 is no output line: it is not this batch's output"):
            batch_inference(str(inp), str(out), base_url=primary.url, ledger_url=ledger)
        assert out.read_text() == "my notes, not JSONL\n" and primary.requests == []
        out.unlink()
        assert batch_inference(str(inp), str(out), base_url=primary.url, ledger_url=ledger)["ok"] == 3
        # Its own output is resumed (nothing left to do); another batch's input may not append to it.
        assert batch_inference(str(inp), str(out), base_url=primary.url, ledger_url=ledger)["skipped"] == 3
        other = write_batch(tmp_path / "other.jsonl", 1)
        other.write_text(other.read_text().replace('"q0"', '"z0"'))
        with pytest.raises(ConfigError, match="holds custom_id 'q0', which is in no line of this input"):
            batch_inference(str(other), str(out), base_url=primary.url, ledger_url=ledger)
    assert len(out.read_text().splitlines()) == 3


def _vllm_importable() -> bool:
    try:
        import vllm  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_vllm_importable(), reason="vllm is installed: the missing-vllm error cannot happen")
def test_choosing_vllm_without_vllm_is_one_clear_error(tmp_path: Path) -> None:
    inp = write_batch(tmp_path / "in.jsonl", 1)
    with pytest.raises(ConfigError, match=r"engine 'vllm' needs the vllm package"):
        batch_inference(
            str(inp),
            str(tmp_path / "o.jsonl"),
            engine="vllm",
            model="m",
            ledger_url=f"sqlite:///{tmp_path}/l.db",
        )


@pytest.mark.gpu
@pytest.mark.skipif(not _vllm_importable(), reason="vllm is not installed on this machine")
def test_vllm_engine_runs_chat_completions_and_embeddings_in_process(tmp_path: Path) -> None:
    """Needs vllm, a GPU and a small local model in SWARM_TEST_VLLM_MODEL (a path or an HF name in cache)."""
    import os

    model = os.environ.get("SWARM_TEST_VLLM_MODEL")
    if not model:
        pytest.skip("set SWARM_TEST_VLLM_MODEL to a small local model")
    lines = [
        json.dumps(
            {
                "custom_id": "c",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"prompt": "1 2 3", "max_tokens": 4},
            }
        ),
    ]
    inp = tmp_path / "in.jsonl"
    write_batch(inp, 3, lines)
    out = tmp_path / "out.jsonl"
    engine = VllmEngine(model, {"gpu_memory_utilization": 0.5, "max_model_len": 512, "enforce_eager": True})
    stats = run_batch(inp, out, engine, items=read_input(inp))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in rows] == ["q0", "q1", "q2", "c"]
    assert stats.ok == 4, rows
    assert rows[0]["response"]["body"]["choices"][0]["message"]["content"]
    assert rows[3]["response"]["body"]["usage"]["completion_tokens"] > 0

"""The batch runner and HTTP engine against a local OpenAI-compatible server: order, retries, bad
lines, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.inference.engines import HttpEngine, HttpSettings
from flows.inference.runner import run_batch
from testkit.inference_openai_server import FakeOpenAIState, run_fake_openai

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def server() -> Iterator[FakeOpenAIState]:
    with run_fake_openai() as state:
        yield state


def chat_line(cid: str, text: str) -> str:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    return json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})


def write_input(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def read_output(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def engine(url: str, **kw: object) -> HttpEngine:
    settings = {"concurrency": 8, "timeout_s": 5.0, "max_retries": 3, "backoff_base_s": 0.01, **kw}
    return HttpEngine(HttpSettings(url, **settings))  # type: ignore[arg-type]


def test_output_keeps_input_order_under_concurrency(server: FakeOpenAIState, tmp_path: Path) -> None:
    server.jitter_s = 0.03  # answers come back shuffled
    inp = write_input(tmp_path / "in.jsonl", [chat_line(f"req-{i}", f"question {i}") for i in range(60)])
    out = tmp_path / "out.jsonl"
    stats = run_batch(inp, out, engine(server.url, concurrency=12), chunk_size=25)
    rows = read_output(out)
    assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(60)]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows)
    assert rows[7]["response"]["body"]["choices"][0]["message"]["content"] == "echo: question 7"
    assert stats.ok == 60 and stats.failed == 0 and stats.tokens == 60 * (2 + 3)


def test_completions_and_embeddings_go_to_their_endpoints(server: FakeOpenAIState, tmp_path: Path) -> None:
    lines = [
        json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/completions", "body": {"prompt": "hi"}}),
        json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": ["a", "b"]}}),
    ]
    out = tmp_path / "out.jsonl"
    run_batch(write_input(tmp_path / "in.jsonl", lines), out, engine(server.url, model="served-model"))
    c, e = read_output(out)
    assert c["response"]["body"]["choices"][0]["text"] == "echo: hi"
    assert len(e["response"]["body"]["data"]) == 2
    # a body without "model" gets the configured one
    assert sorted((p, b["model"]) for p, b in server.requests) == [
        ("/v1/completions", "served-model"),
        ("/v1/embeddings", "served-model"),
    ]


def test_500_and_429_are_retried_honouring_retry_after(server: FakeOpenAIState, tmp_path: Path) -> None:
    server.faults.extend(["500", "429", "500"])
    server.retry_after = "0.3"
    inp = write_input(tmp_path / "in.jsonl", [chat_line("only", "hello")])
    out = tmp_path / "out.jsonl"
    t0 = time.monotonic()
    stats = run_batch(inp, out, engine(server.url, concurrency=1))
    assert time.monotonic() - t0 >= 0.3  # waited as the server asked
    assert stats.ok == 1 and len(server.requests) == 4
    assert read_output(out)[0]["error"] is None


def test_errors_after_retries_and_client_errors_become_error_lines(server: FakeOpenAIState, tmp_path: Path) -> None:
    lines = [
        chat_line("good-1", "fine"),
        chat_line("perm-500", "always [fail500]"),
        chat_line("bad-400", "nope [fail400]"),
        "{broken",
        json.dumps({"custom_id": "img", "method": "POST", "url": "/v1/images/generations", "body": {}}),
        chat_line("good-2", "fine too"),
    ]
    out = tmp_path / "out.jsonl"
    stats = run_batch(write_input(tmp_path / "in.jsonl", lines), out, engine(server.url, max_retries=2))
    rows = read_output(out)
    assert [r["custom_id"] for r in rows] == ["good-1", "perm-500", "bad-400", None, "img", "good-2"]
    assert rows[1]["response"]["status_code"] == 500 and "injected permanent failure" in rows[1]["error"]["message"]
    assert rows[2]["response"]["status_code"] == 400 and rows[2]["error"]["code"] == "http_error"
    assert rows[3]["error"]["code"] == "invalid_json" and rows[3]["error"]["line"] == 4
    assert rows[4]["error"]["code"] == "unsupported_url"
    paths = [p for p, _ in server.requests]
    assert paths.count("/v1/chat/completions") == 2 + 3 + 1  # 500: 1 + 2 retries; 400: never retried
    assert (stats.ok, stats.failed) == (2, 4)


def test_a_timeout_is_retried_then_reported(server: FakeOpenAIState, tmp_path: Path) -> None:
    server.slow_s = 1.0
    server.faults.extend(["slow", "slow"])
    inp = write_input(tmp_path / "in.jsonl", [chat_line("t", "slow one")])
    out = tmp_path / "out.jsonl"
    stats = run_batch(inp, out, engine(server.url, concurrency=1, timeout_s=0.3, max_retries=1))
    row = read_output(out)[0]
    assert row["error"]["code"] == "timeout" and row["response"]["status_code"] == 504
    assert stats.failed == 1


def test_rerun_skips_what_is_done(server: FakeOpenAIState, tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [chat_line(f"r{i}", "x") for i in range(5)] + ["{bad"])
    out = tmp_path / "out.jsonl"
    run_batch(inp, out, engine(server.url))
    sent = len(server.requests)
    stats = run_batch(inp, out, engine(server.url))
    assert len(server.requests) == sent and stats.skipped == 6 and stats.ok == stats.failed == 0
    assert len(read_output(out)) == 6


@pytest.mark.slow
def test_resume_after_sigkill_writes_each_custom_id_exactly_once(server: FakeOpenAIState, tmp_path: Path) -> None:
    n = 120
    server.delay_s = 0.02
    inp = write_input(tmp_path / "in.jsonl", [chat_line(f"id-{i:03d}", f"q{i}") for i in range(n)])
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "flows.inference.runner", "--input", str(inp), "--output", str(out)]
    cmd += ["--base-url", server.url, "--concurrency", "4", "--chunk-size", "16"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 20):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(out.read_bytes().splitlines())
    assert 20 <= written < n, "the run must be killed mid-way"
    with out.open("ab") as fh:  # what a kill in the middle of a write leaves behind
        fh.write(b'{"id":"vllm-torn","custom_id":"id-9')
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_output(out)  # every line parses: the torn one was cut
    assert [r["custom_id"] for r in rows] == [f"id-{i:03d}" for i in range(n)]
    assert all(r["error"] is None for r in rows)
    assert f"skipped={written}" in rerun.stdout or f"skipped={written - 1}" in rerun.stdout

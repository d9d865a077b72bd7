"""The batch runner and HTTP engine against a local OpenAI-compatible server: order, retries, bad
lines, resume after SIGKILL, failed lines sent again on request."""

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

from flows.inference.batch_io import retry_path
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


def sent_ids(server: FakeOpenAIState) -> list[str]:
    """The question each request asked (chat_line's text is the custom_id's number)."""
    return [body["messages"][-1]["content"] for _, body in server.requests]


def failing_once(server: FakeOpenAIState, texts: set[str]) -> None:
    """Answer 400 to these questions until the test clears ``server.reject``."""
    server.reject = lambda body: 400 if body["messages"][-1]["content"] in texts else None


def test_retry_failed_resends_exactly_the_failed_lines_in_place(server: FakeOpenAIState, tmp_path: Path) -> None:
    inp = write_input(tmp_path / "in.jsonl", [chat_line(f"c{i}", f"q{i}") for i in range(12)] + ["{bad"])
    out = tmp_path / "out.jsonl"
    failing_once(server, {"q2", "q5", "q9"})
    first = run_batch(inp, out, engine(server.url), chunk_size=5)
    assert (first.ok, first.failed) == (9, 4)
    before = out.read_text().splitlines()
    server.reject, server.requests = None, []
    plain = run_batch(inp, out, engine(server.url))  # without retry_failed an error is an answer too
    assert server.requests == [] and plain.skipped == 13 and out.read_text().splitlines() == before
    stats = run_batch(inp, out, engine(server.url, concurrency=3), chunk_size=2, retry_failed=True)
    assert sorted(sent_ids(server)) == ["q2", "q5", "q9"]  # the successful lines were not sent again
    assert (stats.retried, stats.ok, stats.failed, stats.skipped) == (3, 3, 0, 10)
    after = out.read_text().splitlines()
    rows = [json.loads(x) for x in after]
    assert [r["custom_id"] for r in rows] == [f"c{i}" for i in range(12)] + [None]  # input order, each id once
    assert [i for i, r in enumerate(rows) if r["error"]] == [12]  # only the bad input line: it was never sent
    assert [a for a, b in zip(after, before, strict=True) if a != b] == [after[2], after[5], after[9]]
    assert not retry_path(out).exists()


@pytest.mark.slow
def test_a_retry_killed_midway_loses_nothing_and_resends_only_what_is_left(
    server: FakeOpenAIState, tmp_path: Path
) -> None:
    n = 40
    inp = write_input(tmp_path / "in.jsonl", [chat_line(f"id-{i:02d}", f"q{i}") for i in range(n)])
    out = tmp_path / "out.jsonl"
    failing = {f"q{i}" for i in range(0, n, 2)}
    failing_once(server, failing)
    run_batch(inp, out, engine(server.url))
    before = out.read_bytes()
    server.reject, server.requests, server.delay_s = None, [], 0.05
    cmd = [sys.executable, "-m", "flows.inference.runner", "--input", str(inp), "--output", str(out)]
    cmd += ["--base-url", server.url, "--concurrency", "1", "--chunk-size", "2", "--retry-failed"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    side = retry_path(out)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not side.exists() or len(side.read_bytes().splitlines()) < 4):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered = side.read_bytes().count(b"\n")  # complete lines: a torn last one is cut on resume
    assert 4 <= answered < len(failing), "the retry must be killed mid-way"
    assert out.read_bytes() == before  # the output is replaced only once the retry pass is complete
    server.requests, server.delay_s = [], 0.0
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert len(server.requests) == len(failing) - answered  # what the killed pass got is kept, not re-sent
    rows = read_output(out)
    assert [r["custom_id"] for r in rows] == [f"id-{i:02d}" for i in range(n)]
    assert all(r["error"] is None for r in rows) and not side.exists()

"""Pure parts of the research flow: query list, worker output parsing and its usage, interpreter check, the
ledger's migration."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.inference.usage import ModelUsage, Usage
from flows.research.gptr_worker import Meter
from flows.research.ledger import MIGRATIONS, open_ledger, record_result
from flows.research.rendering import report_markdown, summary_markdown
from flows.research.runs import QueryResult, check_interpreter, normalise_queries, parse_worker_output, slugify


def call(model: str, prompt: int, completion: int, cost: str | None) -> dict[str, Any]:
    """One record as the worker's Meter writes it."""
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"request_model": "default", "response": {"model": model, "usage": usage}, "cost_header": cost}


def usage(*calls: tuple[str, int, int, float | None]) -> dict[str, ModelUsage]:
    per_model: dict[str, ModelUsage] = {}
    for model, prompt, completion, cost in calls:
        per_model.setdefault(model, ModelUsage()).add(Usage(model, prompt, completion, prompt + completion, cost))
    return per_model


def test_queries_are_trimmed_deduplicated_and_required() -> None:
    assert normalise_queries("  what  is RAG ") == ["what is RAG"]
    assert normalise_queries(["a", " ", "b", "a"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="no research query"):
        normalise_queries(["", "  "])


def test_slug_is_safe_for_file_names() -> None:
    assert slugify("How do Prefect work-pools route runs?!") == "how-do-prefect-work-pools-route-runs"
    assert slugify("???") == "query"


def test_worker_output_last_json_line_wins() -> None:
    ok = {"ok": True, "report": "# R", "sources": [{"url": "u", "title": "t"}], "duration_s": 2}
    r = parse_worker_output("q", 0, "noise\n{not json either\n" + json.dumps(ok) + "\n", "")
    assert r.ok and r.report == "# R" and r.sources == [{"url": "u", "title": "t"}] and r.duration_s == 2
    assert r.usage == {} and r.cost_usd is None  # no call reported: unknown, not free


def test_the_gateways_numbers_are_summed_per_model_and_one_unpriced_call_makes_the_cost_unknown() -> None:
    calls = [call("chat", 100, 20, "0.0002"), call("chat", 50, 5, "0.0001"), call("embed", 30, 0, "0")]
    r = parse_worker_output("q", 0, json.dumps({"ok": True, "report": "# R", "calls": calls}), "")
    assert {m: (u.requests, u.prompt_tokens, u.completion_tokens, u.cost_known) for m, u in r.usage.items()} == {
        "chat": (2, 150, 25, pytest.approx(0.0003)),
        "embed": (1, 30, 0, 0.0),
    }
    assert r.cost_usd == pytest.approx(0.0003)
    unpriced = parse_worker_output(
        "q", 0, json.dumps({"ok": True, "report": "# R", "calls": [*calls, call("chat", 1, 1, None)]}), ""
    )
    assert unpriced.usage["chat"].requests == 3 and unpriced.usage["chat"].cost_known is None
    assert unpriced.cost_usd is None


def test_the_meter_records_what_the_gateway_answered_in_the_shape_the_flow_reads() -> None:
    meter = Meter()
    sent = httpx.Request("POST", "http://gw/v1/chat/completions", json={"model": "default", "messages": []})
    body = {"model": "hosted_vllm/tiny", "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}
    meter.note(
        sent, httpx.Response(200, json=body, headers={"x-litellm-response-cost": "1.1e-05"}, request=sent), False
    )
    meter.note(sent, httpx.Response(200, json=body, request=sent), False)  # no cost header: unknown
    meter.note(sent, httpx.Response(429, json={"error": {}}, request=sent), False)  # no answer, nothing to count
    models = httpx.Request("GET", "http://gw/v1/models")
    meter.note(models, httpx.Response(200, json={"data": []}, request=models), False)  # not a model call
    streamed = httpx.Request("POST", "http://gw/v1/embeddings", json={"model": "embeddings", "input": ["a"]})
    meter.note(streamed, httpx.Response(200, content=b"", request=streamed), True)
    r = parse_worker_output("q", 0, json.dumps({"ok": True, "report": "# R", "calls": meter.calls}), "")
    assert {m: (u.requests, u.prompt_tokens, u.priced_requests) for m, u in r.usage.items()} == {
        "hosted_vllm/tiny": (2, 14, 1),
        "embeddings": (1, 0, 0),  # a streamed answer's usage is not read: counted, its cost unknown
    }
    assert r.usage["hosted_vllm/tiny"].cost_usd == pytest.approx(1.1e-05) and r.cost_usd is None


def test_worker_failures_become_one_line_reasons() -> None:
    failure = {"ok": False, "error": "APIConnectionError: refused", "calls": [call("chat", 10, 2, "0.001")]}
    failed = parse_worker_output("q", 0, json.dumps(failure), "")
    assert not failed.ok and failed.error == "APIConnectionError: refused"
    assert failed.cost_usd == pytest.approx(0.001)  # the calls made before the failure were paid for
    empty = parse_worker_output("q", 0, json.dumps({"ok": True, "report": "  "}), "")
    assert not empty.ok and "empty report" in (empty.error or "")
    crashed = parse_worker_output("q", 1, "", "Traceback ...\nModuleNotFoundError: No module named 'x'")
    assert not crashed.ok and crashed.error == (
        "gpt-researcher worker failed (exit 1): ModuleNotFoundError: No module named 'x'"
    )


def test_missing_or_wrong_interpreter_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"gpt-researcher is not configured.*SWARM_GPTR_PYTHON"):
        check_interpreter(None)
    with pytest.raises(ConfigError, match="cannot run /nonexistent/python"):
        check_interpreter("/nonexistent/python")
    try:
        import gpt_researcher  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"cannot import gpt_researcher.*numpy<2.3"):
            check_interpreter(sys.executable)


def test_report_file_lists_sources_tokens_and_the_cost_per_model() -> None:
    per_model = usage(("chat", 100, 20, 0.01), ("embed", 30, 0, None))
    r = QueryResult("q?", True, report="# Title\n\nBody", sources=[{"url": "http://a", "title": "A"}], usage=per_model)
    md = report_markdown(r)
    assert md.startswith("# Title") and "- [A](http://a)" in md
    assert "| chat | 1 | 100 | 20 | $0.010000 |" in md and "| embed | 1 | 30 | 0 | unknown |" in md
    assert "Cost: unknown ·" in md and "estimate" not in md
    priced = QueryResult("q?", True, report="# T", usage=usage(("chat", 100, 20, 0.01)))
    assert "Cost: $0.010000 ·" in report_markdown(priced)
    assert "The gateway reported no usage." in report_markdown(QueryResult("q?", True, report="# T"))
    summary = summary_markdown("run-1", [priced, QueryResult("bad", False, error="timed out after 5s")])
    assert "| q? | ok | 0 | 120 | $0.010000 |" in summary and "| bad | failed | 0 | 0 | unknown |" in summary


def test_old_ledgers_keep_their_rows_and_their_estimates_are_no_longer_called_costs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    old = Database(url)
    old.ensure_schema("research", MIGRATIONS[:2])  # the table as the estimating version made it
    with old.connect() as conn:
        conn.execute(
            "INSERT INTO research_reports (report_id, run_id, query, status, cost_usd, created_at)"
            " VALUES ('old', 'run-0', 'q', 'completed', 0.05, 'then')"
        )
    db = open_ledger(url)
    record_result(db, "run-1", QueryResult("q", True, report="# R", report_id="new", usage=usage(("chat", 9, 3, 2e-5))))
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT report_id, estimated_cost_usd, cost_usd FROM research_reports ORDER BY report_id"
        ).fetchall()
        per_model = conn.execute("SELECT * FROM research_report_usage").fetchall()
    assert rows == [("new", None, pytest.approx(2e-5)), ("old", 0.05, None)]
    assert per_model == [("new", "chat", 1, 9, 3, 1, pytest.approx(2e-5))]

"""Pure parts of the research flow: query list, worker output parsing, interpreter check."""

from __future__ import annotations

import json
import sys

import pytest

from flows.common.errors import ConfigError
from flows.research.rendering import report_markdown
from flows.research.runs import QueryResult, check_interpreter, normalise_queries, parse_worker_output, slugify


def test_queries_are_trimmed_deduplicated_and_required() -> None:
    assert normalise_queries("  what  is RAG ") == ["what is RAG"]
    assert normalise_queries(["a", " ", "b", "a"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="no research query"):
        normalise_queries(["", "  "])


def test_slug_is_safe_for_file_names() -> None:
    assert slugify("How do Prefect work-pools route runs?!") == "how-do-prefect-work-pools-route-runs"
    assert slugify("???") == "query"


def test_worker_output_last_json_line_wins() -> None:
    ok = {
        "ok": True,
        "report": "# R",
        "sources": [{"url": "u", "title": "t"}],
        "cost_usd": 0.5,
        "duration_s": 2,
    }
    r = parse_worker_output("q", 0, "noise\n{not json either\n" + json.dumps(ok) + "\n", "")
    assert r.ok and r.report == "# R" and r.sources == [{"url": "u", "title": "t"}] and r.cost_usd == 0.5


def test_worker_failures_become_one_line_reasons() -> None:
    failed = parse_worker_output("q", 0, json.dumps({"ok": False, "error": "APIConnectionError: refused"}), "")
    assert not failed.ok and failed.error == "APIConnectionError: refused"
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


def test_report_file_lists_sources_and_cost() -> None:
    r = QueryResult("q?", True, report="# Title\n\nBody", sources=[{"url": "http://a", "title": "A"}], cost_usd=0.01)
    md = report_markdown(r)
    assert md.startswith("# Title") and "- [A](http://a)" in md and "$0.0100" in md

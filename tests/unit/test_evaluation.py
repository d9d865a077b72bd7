"""Retrieval metrics against values worked out by hand, and the query set's format."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.common.errors import ConfigError
from flows.rag.evaluation import (
    EvalQuery,
    averages,
    document_ranking,
    parse_queries,
    render_report,
    report_rows,
    same_document,
    score_query,
    search_depth,
)


def test_one_relevant_document_at_the_second_rank() -> None:
    query = EvalQuery("q", ("a.html",))
    at_one, at_two = score_query(query, ["x.html", "a.html"], 1), score_query(query, ["x.html", "a.html"], 2)
    assert (at_one.recall, at_two.recall) == (0.0, 1.0)
    assert at_two.reciprocal_rank == 0.5 and at_two.first_rank == 2
    assert at_two.ndcg == pytest.approx(1 / math.log2(3))  # 0.631: one hit at rank 2 of an ideal rank 1


def test_a_documents_later_chunks_do_not_count_and_do_not_take_a_rank() -> None:
    query = EvalQuery("q", ("a.md", "b.md"))
    chunks = ["a.md", "a.md", "x.md", "b.md"]  # documents: a (1), x (2), b (3)
    assert document_ranking(query.relevant, chunks) == ["a.md", "x.md", "b.md"]
    score = score_query(query, chunks, 2)
    assert score.recall == 0.5  # b is the third document
    assert score_query(query, chunks, 3).recall == 1.0
    assert score.reciprocal_rank == 1.0
    # DCG 1 + 1/log2(4) = 1.5 over the ideal 1 + 1/log2(3) = 1.631: 0.920 (b at chunk rank 4 would give 0.877)
    assert score.ndcg == pytest.approx(1.5 / (1 + 1 / math.log2(3)))


def test_a_query_whose_relevant_documents_are_not_found_scores_zero() -> None:
    score = score_query(EvalQuery("q", ("a.md",)), ["x.md", "y.md", "x.md"], 10)
    assert (score.recall, score.reciprocal_rank, score.ndcg, score.first_rank) == (0.0, 0.0, 0.0, None)


def test_ndcg_stops_at_ten_documents_and_mrr_does_not() -> None:
    chunks = [f"other-{i}.md" for i in range(10)] + ["a.md"]
    score = score_query(EvalQuery("q", ("a.md",)), chunks, 11)
    assert (score.recall, score.ndcg) == (1.0, 0.0)
    assert score.reciprocal_rank == pytest.approx(1 / 11)
    assert search_depth(5) == 10 and search_depth(20) == 20


def test_ndcg_ideal_has_as_many_hits_as_relevant_documents_up_to_ten() -> None:
    score = score_query(EvalQuery("q", ("a.md", "b.md", "c.md")), ["a.md"], 10)
    assert score.recall == pytest.approx(1 / 3)
    assert score.ndcg == pytest.approx(1 / (1 + 1 / math.log2(3) + 1 / math.log2(4)))  # 0.469


@pytest.mark.parametrize(
    ("path", "entry", "same"),
    [
        ("library/os.html", "library/os.html", True),
        ("html/library/os.html", "library/os.html", True),  # ingested from a folder above the set's
        ("os.html", "/usr/share/doc/python3.11/html/library/os.html", True),  # ingested from below it
        ("library/pos.html", "library/os.html", False),  # whole components only
        ("c-api/os.html", "library/os.html", False),
        ("./library/os.html", "library/os.html", True),
    ],
)
def test_relevant_paths_match_on_whole_components_from_the_end(path: str, entry: str, same: bool) -> None:
    assert same_document(path, entry) is same


def test_two_paths_matching_one_entry_are_one_document() -> None:
    ranking = document_ranking(("os.html",), ["a/os.html", "b/os.html", "x.html"])
    assert ranking == ["os.html", "x.html"]
    assert score_query(EvalQuery("q", ("os.html",)), ["a/os.html", "b/os.html"], 1).recall == 1.0


def test_averages_and_the_report() -> None:
    scores = [
        score_query(EvalQuery("found first", ("a.md",)), ["a.md"], 5),
        score_query(EvalQuery("found second", ("a.md",)), ["x.md", "a.md"], 5),
        score_query(EvalQuery("missed", ("a.md",)), ["x.md"], 5),
    ]
    mean = averages(scores)
    assert mean["recall"] == pytest.approx(2 / 3)
    assert mean["mrr"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert mean["ndcg"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    rows = report_rows(scores, 5)
    assert list(rows[0]) == ["query", "recall@5", "RR", "nDCG@10", "first relevant"]
    assert rows[1]["RR"] == "0.500" and rows[2]["first relevant"] == "-"
    assert rows[-1]["query"] == "mean of 3 queries" and rows[-1]["RR"] == "MRR 0.500"
    markdown = render_report(rows, "title").splitlines()
    assert markdown[0] == "# title" and markdown[2].startswith("| query | recall@5 |")
    assert "| missed | 0.000 | 0.000 | 0.000 | - |" in markdown


def test_a_query_set_parses_skipping_blank_lines() -> None:
    lines = ['{"query": "bees", "relevant": ["bees.md"]}', "", '{"query": "x", "relevant": ["a", "b/c"]}']
    assert parse_queries(lines, "set.jsonl") == [EvalQuery("bees", ("bees.md",)), EvalQuery("x", ("a", "b/c"))]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "set.jsonl line 3: not JSON"),
        ('{"relevant": ["a"]}', 'set.jsonl line 3: "query" must be a non-empty string'),
        ('{"query": "q", "relevant": []}', 'set.jsonl line 3: "relevant" must be a non-empty list of paths'),
        ('{"query": "q", "relevant": "a.md"}', 'set.jsonl line 3: "relevant" must be a non-empty list'),
        ('["q", ["a.md"]]', 'set.jsonl line 3: "query" must be'),
    ],
)
def test_a_malformed_line_fails_naming_its_number(bad: str, message: str) -> None:
    lines = ['{"query": "bees", "relevant": ["bees.md"]}', "", bad, '{"query": "after", "relevant": ["a"]}']
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_queries(lines, "set.jsonl")


def test_an_empty_query_set_is_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("set.jsonl holds no queries")):
        parse_queries(["", "  "], "set.jsonl")


# scripts/build_eval_set.py, run as a user runs it.
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_eval_set.py"
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")


def _page(*headings: str) -> str:
    """A page as Sphinx writes it: each heading ends with a pilcrow link."""
    body = "".join(f'<h2>{h}<a class="headerlink" href="#x" title="Permalink">¶</a></h2><p>text</p>' for h in headings)
    return f"<html><body><h3>Navigation</h3>{body}</body></html>"


def _build(docs: Path, out: Path, *args: str) -> list[tuple[str, str]]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--docs", str(docs), "--out", str(out), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return [(entry["query"], *entry["relevant"]) for entry in map(json.loads, out.read_text().splitlines())]


def test_the_eval_set_keeps_only_headings_specific_to_one_page(tmp_path: Path) -> None:
    library = tmp_path / "html" / "library"
    library.mkdir(parents=True)
    (library / "a.html").write_text(_page("File <code>Descriptor</code> Operations", "Examples", "Shared Heading"))
    (library / "b.html").write_text(_page("Socket Timeouts", "shared heading"))
    (library / "c.html").write_text(_page("Examples"))
    found = _build(tmp_path / "html", tmp_path / "q.jsonl", "--count", "10", "--copy-to", str(tmp_path / "copy"))
    assert sorted(found) == [("File Descriptor Operations", "library/a.html"), ("Socket Timeouts", "library/b.html")]
    assert sorted(p.name for p in (tmp_path / "copy" / "library").iterdir()) == ["a.html", "b.html", "c.html"]
    one = _build(tmp_path / "html", tmp_path / "one.jsonl", "--pages", "1", "--seed", "4", "--count", "10")
    assert len(one) <= 1 and one == _build(tmp_path / "html", tmp_path / "again.jsonl", "--pages", "1", "--seed", "4")


def test_the_eval_set_draws_one_heading_per_page_before_a_second(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    (library / "many.html").write_text(_page(*(f"Section number {i}" for i in range(20))))
    (library / "few.html").write_text(_page("Lonely section"))
    found = _build(tmp_path, tmp_path / "q.jsonl", "--count", "2")
    assert sorted(page for _, page in found) == ["library/few.html", "library/many.html"]


@pytest.mark.skipif(not (PYTHON_DOCS / "library").is_dir(), reason="python3.11-doc is not installed")
def test_the_eval_set_of_the_python_docs_names_each_querys_own_page(tmp_path: Path) -> None:
    found = _build(PYTHON_DOCS, tmp_path / "q.jsonl", "--pages", "20", "--count", "30", "--seed", "2")
    assert len(found) == 30
    for query, page in found:
        assert query.split()[0] in (PYTHON_DOCS / page).read_text(encoding="utf-8"), (query, page)
        assert len(query.split()) > 1

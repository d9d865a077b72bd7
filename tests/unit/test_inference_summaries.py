"""rag-summaries' pure part: which documents need a summary, their batch lines, and reading the answers."""

from __future__ import annotations

import json

from flows.inference.batch_io import error_output, ok_output, parse_lines
from flows.inference.summaries import (
    Answer,
    batch_lines,
    batch_name,
    custom_id,
    document_texts,
    needing_summary,
    parse_custom_id,
    read_answers,
)


def point(doc: str, version: str, index: int, text: str, summary_version: str | None = None) -> dict[str, object]:
    return {"source_id": "s", "doc_id": doc, "version": version, "title": f"{doc}.md", "chunk_index": index,
            "text": text, "summary_version": summary_version}  # fmt: skip


def test_only_indexed_documents_without_a_summary_of_their_version_are_chosen_in_order() -> None:
    indexed = {("s", "a"): "v2", ("s", "b"): "v1", ("s", "c"): "v1", ("s", "d"): "v1"}
    payloads = [
        point("b", "v1", 1, "second"),
        point("a", "v1", 0, "old version of a", summary_version="v1"),  # a stale point: a is at v2 now
        point("a", "v2", 0, "a anew"),
        point("b", "v1", 0, "first"),
        point("c", "v1", 0, "done", summary_version="v1"),
        point("e", "v1", 0, "not indexed (failed or deleted)"),
    ]
    chosen = needing_summary(indexed, payloads, limit=10)
    assert chosen == {("s", "a"): "v2", ("s", "b"): "v1"}  # d has no points (yet): nothing to summarise
    docs = document_texts(chosen, payloads, max_chars=9)
    assert [(d.doc_id, d.version, d.text, d.title) for d in docs] == [("a", "v2", "a anew", "a.md"),
                                                                      ("b", "v1", "first\nsec", "b.md")]  # fmt: skip
    assert needing_summary(indexed, payloads, limit=1) == {("s", "a"): "v2"}


def test_batch_lines_are_valid_requests_named_by_their_content() -> None:
    docs = document_texts({("s", "a"): "v1"}, [point("a", "v1", 0, "text")], 100)
    lines = batch_lines(docs, max_tokens=50, model="qwen")
    (item,) = parse_lines(lines)
    assert item.url == "/v1/chat/completions" and parse_custom_id(item.custom_id) == ("s", "a", "v1")
    assert item.body["model"] == "qwen" and item.body["messages"][-1]["content"] == "Title: a.md\n\ntext"
    assert "model" not in json.loads(batch_lines(docs, 50, None)[0])["body"]
    assert batch_name(lines) == batch_name(list(lines)) != batch_name(batch_lines(docs, 51, "qwen"))


def test_answers_carry_the_summary_or_the_error_and_foreign_lines_are_ignored() -> None:
    body = {"model": "qwen", "choices": [{"message": {"role": "assistant", "content": "  Short.  "}}]}
    lines = [
        json.dumps(ok_output(custom_id("s", "a", "v1"), body)),
        json.dumps(error_output(custom_id("s", "b", "v1"), 2, "http_error", "HTTP 500: down", 500)),
        json.dumps(ok_output(custom_id("s", "c", "v1"), {"choices": []})),
        json.dumps(ok_output("not-ours", body)),
        "torn {",
    ]
    assert read_answers(lines) == [
        Answer("s", "a", "v1", "Short.", model="qwen"),
        Answer("s", "b", "v1", None, "HTTP 500: down"),
        Answer("s", "c", "v1", None, "no summary in the answer"),
    ]

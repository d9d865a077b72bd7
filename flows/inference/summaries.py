"""rag-summaries without Prefect or I/O: which documents need a summary, their batch lines, and the answers.

A document needs one when the ledger has it indexed and no point of its current version in the store carries
``summary_version`` equal to that version (a re-indexed document's new points carry none). Each batch line's
custom_id names the document and the version it was summarised from, so an answer that arrives after the
document changed again is recognised and dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# What the two scans of the store read of each point (no vectors): which documents, then their text.
STATE_FIELDS = ("source_id", "doc_id", "version", "summary_version")
TEXT_FIELDS = ("source_id", "doc_id", "version", "title", "chunk_index", "text")
# Chunks read per document: the first ones hold its start, and the prompt takes at most max_chars of them.
MAX_CHUNKS = 32
PROMPT = "Summarise the document below in at most three sentences, in its own language. Answer with the summary only."

DocKey = tuple[str, str]  # (source_id, doc_id)


@dataclass(frozen=True)
class DocumentText:
    source_id: str
    doc_id: str
    version: str
    title: str
    text: str


@dataclass(frozen=True)
class Answer:
    source_id: str
    doc_id: str
    version: str
    summary: str | None  # None when the line is an error
    error: str | None = None
    model: str | None = None


def custom_id(source_id: str, doc_id: str, version: str) -> str:
    return json.dumps([source_id, doc_id, version], separators=(",", ":"))


def parse_custom_id(value: Any) -> tuple[str, str, str] | None:
    try:
        parts = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        return None
    if isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts):
        return parts[0], parts[1], parts[2]
    return None


def needing_summary(
    indexed: Mapping[DocKey, str], payloads: Iterable[Mapping[str, Any]], limit: int
) -> dict[DocKey, str]:
    """The indexed documents (``indexed``: key -> current version) that have points of that version and none
    carrying its summary; the first ``limit`` in key order, with their versions."""
    seen: set[DocKey] = set()
    summarised: set[DocKey] = set()
    for p in payloads:
        key = (str(p.get("source_id")), str(p.get("doc_id")))
        version = indexed.get(key)
        if version is None or p.get("version") != version:
            continue  # not indexed, or a point of another version (deleted once the new one is written)
        seen.add(key)
        if p.get("summary_version") == version:
            summarised.add(key)
    return {key: indexed[key] for key in sorted(seen - summarised)[: max(0, limit)]}


def document_texts(
    chosen: Mapping[DocKey, str], payloads: Iterable[Mapping[str, Any]], max_chars: int
) -> list[DocumentText]:
    """The start of each chosen document's text (its first chunks, ``max_chars`` at most), in key order; only
    the chosen documents' chunks are kept while the points stream by."""
    titles: dict[DocKey, str] = {}
    chunks: dict[DocKey, dict[int, str]] = {}
    for p in payloads:
        key = (str(p.get("source_id")), str(p.get("doc_id")))
        index = p.get("chunk_index")
        index = index if isinstance(index, int) else 0
        if chosen.get(key) is None or p.get("version") != chosen[key] or index >= MAX_CHUNKS:
            continue
        chunks.setdefault(key, {})[index] = str(p.get("text") or "")
        titles.setdefault(key, str(p.get("title") or key[1]))
    return [
        DocumentText(
            key[0], key[1], chosen[key], titles[key], "\n".join(t for _, t in sorted(chunks[key].items()))[:max_chars]
        )
        for key in sorted(chunks)
    ]


def batch_lines(docs: Iterable[DocumentText], max_tokens: int, model: str | None) -> list[str]:
    """One /v1/chat/completions line per document, in the given order."""
    lines = []
    for d in docs:
        body: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": PROMPT},
                {"role": "user", "content": f"Title: {d.title}\n\n{d.text}"},
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if model:
            body["model"] = model
        line = {"custom_id": custom_id(d.source_id, d.doc_id, d.version), "method": "POST"}
        lines.append(json.dumps({**line, "url": "/v1/chat/completions", "body": body}, ensure_ascii=False))
    return lines


def batch_name(lines: Iterable[str]) -> str:
    """Names the batch by its content: a re-run for the same documents and versions finds the same files."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:16]


def read_answers(lines: Iterable[str]) -> list[Answer]:
    """The documents' summaries (or errors) from batch-inference's output lines; foreign lines are ignored."""
    answers = []
    for raw in lines:
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue
        ids = parse_custom_id(obj.get("custom_id")) if isinstance(obj, dict) else None
        if ids is None:
            continue
        error = obj.get("error")
        body = (obj.get("response") or {}).get("body")
        summary = _message(body) if error is None else None
        if summary is None:
            message = error.get("message") if isinstance(error, dict) else None
            answers.append(Answer(*ids, None, message or "no summary in the answer"))
        else:
            answers.append(Answer(*ids, summary, model=body.get("model")))
    return answers


def _message(body: Any) -> str | None:
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content.strip() if isinstance(content, str) and content.strip() else None

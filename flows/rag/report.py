"""Human-readable summaries of a sync, shared by the Prefect artifact and the CLI."""

from __future__ import annotations

from collections import Counter
from typing import Any

from flows.rag.indexable import skipped_kind
from flows.rag.ledger import SKIPPED

SUMMARY_FIELDS = (
    ("files_seen", "files seen"),
    ("new", "new"),
    ("changed", "changed"),
    ("unchanged", "unchanged"),
    ("renamed", "renamed/moved"),
    ("removed", "removed"),
    ("unreadable", "unreadable entries (nothing under them removed)"),
    ("indexed", "indexed"),
    ("skipped", "skipped"),
    ("failed", "failed"),
    ("chunks", "chunks written"),
    ("split_chunks", "chunks split to fit the model window"),
    ("seconds", "seconds"),
)


def render_sync_report(stats: dict[str, Any]) -> str:
    lines = [f"# rag-sync of `{stats.get('source', '?')}`", ""]
    for warning in stats.get("warnings") or []:
        lines += [f"**Warning:** {warning}", ""]
    lines += ["| | |", "|---|---:|"]
    lines += [f"| {label} | {stats.get(key, 0)} |" for key, label in SUMMARY_FIELDS]
    problems = stats.get("problems") or []
    kinds = Counter(kind for _, status, reason in problems if status == SKIPPED and (kind := skipped_kind(reason)))
    if kinds:
        lines += ["", "## Skipped by type", "", "| kind | files |", "|---|---:|"]
        lines += [f"| {kind} | {count} |" for kind, count in sorted(kinds.items())]
    if problems:
        lines += ["", "## Skipped, failed and unreadable files", "", "| file | status | reason |", "|---|---|---|"]
        lines += [f"| `{path}` | {status} | {reason} |" for path, status, reason in problems]
    return "\n".join(lines) + "\n"

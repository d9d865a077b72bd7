"""Research results as markdown: a report's file and artifact, and the run's summary table."""

from __future__ import annotations

from flows.research.runs import QueryResult


def report_markdown(r: QueryResult) -> str:
    """The report followed by its sources and run facts, as stored in the file and the artifact."""
    lines = [r.report.rstrip(), "", "---", f"Query: {r.query}", ""]
    if r.sources:
        lines += [
            "Sources:",
            *[f"- [{s.get('title') or s.get('url')}]({s.get('url')})" for s in r.sources],
            "",
        ]
    lines.append(f"Cost (estimate): ${r.cost_usd:.4f} · duration {r.duration_s:.1f} s · id {r.report_id}")
    return "\n".join(lines) + "\n"


def summary_markdown(run_id: str, results: list[QueryResult]) -> str:
    lines = [
        f"# Research run `{run_id}`",
        "",
        "| query | status | sources | cost | duration | file or error |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for r in results:
        detail = r.report_path if r.ok else (r.error or "").replace("|", "/")
        lines.append(
            f"| {r.query.replace('|', '/')} | {'ok' if r.ok else 'failed'} | {len(r.sources)} |"
            f" ${r.cost_usd:.4f} | {r.duration_s:.1f} s | {detail} |"
        )
    return "\n".join(lines) + "\n"

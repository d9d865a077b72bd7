"""Research results as markdown: a report's file and artifact, and the run's summary table."""

from __future__ import annotations

from flows.inference.usage import usage_table
from flows.research.runs import QueryResult


def cost_text(cost_usd: float | None) -> str:
    return "unknown" if cost_usd is None else f"${cost_usd:.6f}"


def report_markdown(r: QueryResult) -> str:
    """The report followed by its sources, the tokens and cost the gateway reported per model, and run facts, as
    stored in the file and the artifact."""
    lines = [r.report.rstrip(), "", "---", f"Query: {r.query}", ""]
    if r.sources:
        lines += [
            "Sources:",
            *[f"- [{s.get('title') or s.get('url')}]({s.get('url')})" for s in r.sources],
            "",
        ]
    if r.usage:
        lines += [*usage_table(r.usage), ""]
    else:
        lines += ["The gateway reported no usage.", ""]
    lines.append(f"Cost: {cost_text(r.cost_usd)} · duration {r.duration_s:.1f} s · id {r.report_id}")
    return "\n".join(lines) + "\n"


def summary_markdown(run_id: str, results: list[QueryResult]) -> str:
    lines = [
        f"# Research run `{run_id}`",
        "",
        "| query | status | sources | tokens | cost | duration | file or error |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        detail = r.report_path if r.ok else (r.error or "").replace("|", "/")
        tokens = sum(u.total_tokens for u in r.usage.values())
        lines.append(
            f"| {r.query.replace('|', '/')} | {'ok' if r.ok else 'failed'} | {len(r.sources)} | {tokens} |"
            f" {cost_text(r.cost_usd)} | {r.duration_s:.1f} s | {detail} |"
        )
    return "\n".join(lines) + "\n"

"""Research runs without Prefect: queries in, one gpt-researcher process (in its own venv) per query, results out."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.common.errors import ConfigError
from flows.inference.usage import ModelUsage, add_usage, total_cost, usage_of

WORKER = Path(__file__).with_name("gptr_worker.py")


@dataclass
class ResearchSettings:
    llm_base_url: str
    searx_url: str
    fast_llm: str
    embedding_model: str
    smart_llm: str | None = None
    strategic_llm: str | None = None
    llm_api_key: str | None = None
    report_type: str = "research_report"
    max_iterations: int = 3
    max_subtopics: int = 3
    total_words: int = 1200
    timeout_s: float = 1800.0


@dataclass
class QueryResult:
    query: str
    ok: bool
    report: str = ""
    sources: list[dict[str, str]] = field(default_factory=list)
    usage: dict[str, ModelUsage] = field(default_factory=dict)  # per model, what the gateway's responses reported
    duration_s: float = 0.0
    error: str | None = None
    report_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    report_path: str | None = None

    @property
    def cost_usd(self) -> float | None:
        """What the gateway reported for every call; None (unknown) when any call carried no cost."""
        return total_cost(self.usage)


def normalise_queries(queries: str | list[str]) -> list[str]:
    """One query or many; blanks dropped, duplicates run once, order kept."""
    raw = [queries] if isinstance(queries, str) else list(queries)
    seen: dict[str, None] = {}
    for q in raw:
        q = " ".join(str(q).split())
        if q:
            seen.setdefault(q, None)
    if not seen:
        raise ConfigError("no research query given")
    return list(seen)


def slugify(text: str, limit: int = 50) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "query"


def check_interpreter(python: str | None) -> str:
    """The gpt-researcher venv's python, or one clear error saying how to create it."""
    hint = (
        "build its venv on this node (SWARM_WITH_GPTR=1 scripts/install.sh makes <checkout>/.venv-gptr) "
        "and set SWARM_GPTR_PYTHON=<checkout>/.venv-gptr/bin/python in the worker's environment; it cannot share "
        "the project venv because gpt-researcher requires numpy<2.3 and the project pins numpy 2.4"
    )
    if not python:
        raise ConfigError(f"gpt-researcher is not configured: {hint}")
    try:
        probe = subprocess.run(
            [python, "-c", "import gpt_researcher"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run {python}: {exc}; {hint}") from exc
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        raise ConfigError(f"{python} cannot import gpt_researcher ({last}); {hint}")
    return python


def worker_job(query: str, s: ResearchSettings, doc_path: Path | None = None) -> dict[str, Any]:
    """``doc_path``: a folder of local context; the worker then researches in hybrid mode (local + web)."""
    return {
        "query": query,
        "report_source": "hybrid" if doc_path else "web",
        "doc_path": str(doc_path) if doc_path else None,
        "llm_base_url": s.llm_base_url,
        "llm_api_key": s.llm_api_key,
        "searx_url": s.searx_url,
        "fast_llm": s.fast_llm,
        "smart_llm": s.smart_llm,
        "strategic_llm": s.strategic_llm,
        "embedding_model": s.embedding_model,
        "report_type": s.report_type,
        "max_iterations": s.max_iterations,
        "max_subtopics": s.max_subtopics,
        "total_words": s.total_words,
    }


def usage_of_calls(calls: Any) -> dict[str, ModelUsage]:
    """The worker's record of each gateway response (its body's model and usage, the cost header), per model."""
    per_model: dict[str, ModelUsage] = {}
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            add_usage(per_model, usage_of(call.get("response"), call.get("cost_header"), call.get("request_model")))
    return per_model


def parse_worker_output(query: str, rc: int, stdout: str, stderr: str) -> QueryResult:
    """The last JSON line on stdout is the result; anything else is a failure with a one-line reason.
    A failed query keeps the usage of the calls it made before failing: they were paid for too."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                break
            usage = usage_of_calls(data.get("calls"))
            duration_s = float(data.get("duration_s") or 0.0)
            if not data.get("ok"):
                return QueryResult(query, False, usage=usage, error=str(data.get("error")), duration_s=duration_s)
            report = str(data.get("report") or "")
            if not report.strip():
                error = "gpt-researcher returned an empty report"
                return QueryResult(query, False, usage=usage, error=error, duration_s=duration_s)
            sources = list(data.get("sources") or [])
            return QueryResult(query, True, report=report, sources=sources, usage=usage, duration_s=duration_s)
    tail = (stderr.strip().splitlines() or [f"exit code {rc}"])[-1]
    return QueryResult(query, False, error=f"gpt-researcher worker failed (exit {rc}): {tail[:300]}")


def run_query(python: str, query: str, s: ResearchSettings, workdir: Path, doc_path: Path | None = None) -> QueryResult:
    """One query in a child process of the gpt-researcher venv; never raises for a failed query."""
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            # -P: the worker's folder stays off sys.path, where the project's modules would shadow its packages
            [python, "-P", str(WORKER)],
            input=json.dumps(worker_job(query, s, doc_path)),
            capture_output=True,
            text=True,
            timeout=s.timeout_s,
            cwd=workdir,  # gpt-researcher writes its outputs/ folder into the working directory
            check=False,
        )
    except subprocess.TimeoutExpired:
        return QueryResult(query, False, error=f"timed out after {s.timeout_s:.0f}s", duration_s=s.timeout_s)
    return parse_worker_output(query, proc.returncode, proc.stdout, proc.stderr)

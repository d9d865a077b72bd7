"""The research flow runs gpt-researcher for real (in its own venv) against a local SearXNG and a local
OpenAI-compatible server, with every other destination unreachable, and stores the reports."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks import OpenAICompatibleEndpoint, PostgresLedger, SearxngServer
from flows.common.errors import ConfigError
from flows.research.ledger import open_ledger
from flows.research.research import research
from testkit.inference_openai_server import run_fake_openai
from testkit.research_searxng import run_fake_searxng

GPTR_PYTHON = os.environ.get("SWARM_GPTR_PYTHON", str(Path(__file__).resolve().parents[3] / ".venv-gptr/bin/python"))
needs_gptr = pytest.mark.skipif(
    not Path(GPTR_PYTHON).exists(), reason=f"no gpt-researcher venv at {GPTR_PYTHON} (set SWARM_GPTR_PYTHON)"
)


def answer(body: dict[str, Any]) -> str:
    """What a model would say to each of gpt-researcher's prompts, in the shape it parses."""
    text = json.dumps(body.get("messages"))
    if "[hang]" in text:
        time.sleep(120)  # a gateway that never answers: the flow's per-query timeout must end it
    if "agent_role_prompt" in text:
        return json.dumps({"server": "Research Agent", "agent_role_prompt": "You are a careful researcher."})
    if "search queries" in text:
        return json.dumps(["prefect work pool routing"])
    return "# Work pools\n\nA work pool routes flow runs to the workers that poll it.\n"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Anything not on 127.0.0.1 goes to a dead proxy; tiktoken gets an empty cache, so a download
    attempt would fail the run instead of passing silently."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    (tmp_path / "tiktoken").mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TAVILY_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield


@needs_gptr
@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_reports_are_stored_and_a_failed_query_does_not_stop_the_others(pg_ledger_url: str, tmp_path: Path) -> None:
    ledger_url = pg_ledger_url  # one backend: each run waits out a 25 s timeout
    with run_fake_openai() as llm, run_fake_searxng() as searx:
        llm.chat_responder = answer
        result = research(
            ["How do Prefect work pools route runs?", "[hang] a query the gateway never answers"],
            llm_base_url=f"{llm.url}/v1",
            searx_url=searx.url,
            fast_llm="fake-model",
            embedding_model="fake-embed",
            max_iterations=1,
            max_subtopics=1,
            gptr_python=GPTR_PYTHON,
            output_dir=str(tmp_path / "reports"),
            ledger_url=ledger_url,
            timeout_s=25,  # the good query takes ~3 s here
        )
        assert "prefect work pool routing" in searx.queries  # gpt-researcher searched via SearXNG
    assert (result["ok"], result["failed"]) == (1, 1)
    good = result["reports"][0]
    text = Path(good["path"]).read_text()
    assert "A work pool routes flow runs" in text and f"{searx.url}/page/2" in text
    with open_ledger(ledger_url).connect() as conn:
        rows = conn.execute(
            "SELECT query, status, report, sources, cost_usd, duration_s, error FROM research_reports"
        ).fetchall()
    by_query = {r[0]: r for r in rows}
    ok_row = by_query["How do Prefect work pools route runs?"]
    assert ok_row[1] == "completed" and "work pool" in ok_row[2]
    assert any(s["url"].endswith("/page/2") for s in json.loads(ok_row[3]))
    assert ok_row[4] > 0 and ok_row[5] > 0
    bad_row = by_query["[hang] a query the gateway never answers"]
    assert bad_row[1] == "failed" and bad_row[6] == "timed out after 25s"


def test_without_gpt_researcher_the_flow_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gpt-researcher"):
        research("q", gptr_python=str(tmp_path / "missing-python"), ledger_url=f"sqlite:///{tmp_path}/l.db")


@pytest.mark.parametrize(
    ("parameter", "block_type"),
    [("llm_block", "OpenAICompatibleEndpoint"), ("searxng_block", "SearxngServer"), ("ledger_block", "PostgresLedger")],
)
def test_an_unknown_block_fails_before_anything_runs(tmp_path: Path, parameter: str, block_type: str) -> None:
    # the missing interpreter would be the next error: the block is checked first
    with pytest.raises(ConfigError, match=f"^{parameter}: no {block_type} block named 'nope'"):
        research("q", gptr_python=str(tmp_path / "missing-python"), **{parameter: "nope"})


@needs_gptr
@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_llm_searxng_and_ledger_blocks_win_over_the_plain_parameters(pg_ledger_url: str, tmp_path: Path) -> None:
    unused = tmp_path / "unused.db"
    with run_fake_openai() as llm, run_fake_searxng() as searx:
        llm.chat_responder = answer
        OpenAICompatibleEndpoint(
            base_url=f"{llm.url}/v1", api_key="research-token", chat_model="block-chat", embedding_model="block-embed"
        ).save("research-llm", overwrite=True)
        SearxngServer(url=searx.url).save("research-searx", overwrite=True)
        PostgresLedger(url=pg_ledger_url, password="research-ledger-pw").save("research-ledger", overwrite=True)
        result = research(
            "How do Prefect work pools route runs?",
            llm_base_url="http://127.0.0.1:1/v1",
            searx_url="http://127.0.0.1:1",
            fast_llm="param-model",
            llm_block="research-llm",
            searxng_block="research-searx",
            ledger_block="research-ledger",
            max_iterations=1,
            max_subtopics=1,
            gptr_python=GPTR_PYTHON,
            output_dir=str(tmp_path / "reports"),
            ledger_url=f"sqlite:///{unused}",
            timeout_s=60,
            local_context_k=0,
        )
        assert "prefect work pool routing" in searx.queries  # searched through the block's SearXNG
        assert llm.requests and set(llm.auth) == {"Bearer research-token"}
        models = {body.get("model") for _, body in llm.requests}
    assert "block-chat" in models and models <= {"block-chat", "block-embed"}
    assert result["ok"] == 1 and not unused.exists()
    with open_ledger(pg_ledger_url).connect() as conn:  # the report row is in the block's database
        assert conn.execute("SELECT status FROM research_reports").fetchall() == [("completed",)]


@needs_gptr
@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_hybrid_research_reads_the_projects_own_collection(tmp_path: Path) -> None:
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync
    from testkit.documents import write_document

    docs = tmp_path / "docs"
    docs.mkdir()
    write_document(docs / "pools.md", "Our thanos work pool only accepts embedding batches from rag-sync.")
    rag_config = {"data_dir": str(tmp_path / "rag")}
    assert rag_sync(LocalFolderSpec(path=str(docs)), rag_config)["indexed"] == 1

    with run_fake_openai() as llm, run_fake_searxng() as searx:
        llm.chat_responder = answer
        result = research(
            "How do Prefect work pools route runs?",
            llm_base_url=f"{llm.url}/v1",
            searx_url=searx.url,
            fast_llm="fake-model",
            embedding_model="fake-embed",
            max_iterations=1,
            max_subtopics=1,
            gptr_python=GPTR_PYTHON,
            output_dir=str(tmp_path / "reports"),
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            timeout_s=60,
            local_context_k=2,
            rag_config=rag_config,
        )
        sent = json.dumps([body for _, body in llm.requests])
    assert result["ok"] == 1
    assert "only accepts embedding batches from rag-sync" in sent  # the local chunk reached gpt-researcher
    assert "prefect work pool routing" in searx.queries  # and the web was searched too

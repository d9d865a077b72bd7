"""The research flow runs gpt-researcher for real (in its own venv) through the real LiteLLM gateway in front of
a real model server (testkit/gateway.py), with SearXNG a local server speaking its JSON API and every other
destination unreachable, and stores the reports, the tokens and cost the gateway reported, and artifacts.
The hand-written OpenAI-compatible server stays for the one fault a real server cannot be made to produce here:
a gateway that never answers."""

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
from testkit.artifacts import flow_run_artifacts
from testkit.gateway import TEST_INPUT_COST, TEST_OUTPUT_COST, Gateway
from testkit.inference_openai_server import run_fake_openai
from testkit.research_searxng import run_fake_searxng
from testkit.tiny_llm import QUERIES, REPORT

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


def usage_rows(ledger_url: str, report_id: str) -> list[tuple[Any, ...]]:
    with open_ledger(ledger_url).connect() as conn:
        return conn.execute(
            "SELECT model, requests, prompt_tokens, completion_tokens, priced_requests, cost_usd"
            " FROM research_report_usage WHERE report_id = %s ORDER BY model",
            (report_id,),
        ).fetchall()


@needs_gptr
@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_research_through_the_real_gateway_stores_the_tokens_and_cost_it_reported(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GATEWAY_KEY", gateway.api_key)
    # gpt-researcher ranks scraped pages by embeddings only above this many characters; the local pages are shorter
    monkeypatch.setenv("COMPRESSION_THRESHOLD", "0")
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    embedded_before = len(gateway.embeddings.requests)
    with run_fake_searxng() as searx:
        state = research(
            "How do Prefect work pools route runs?",
            llm_base_url=gateway.base_url,
            llm_api_key_env="TEST_GATEWAY_KEY",
            fast_llm=gateway.chat_model,
            embedding_model=gateway.embedding_model,
            searx_url=searx.url,
            max_iterations=1,
            max_subtopics=1,
            gptr_python=GPTR_PYTHON,
            output_dir=str(tmp_path / "reports"),
            ledger_url=ledger_url,
            timeout_s=120,
            local_context_k=0,
            return_state=True,
        )
        assert json.loads(QUERIES)[0] in searx.queries  # the tiny model's search query went to SearXNG
    result = state.result()
    assert (result["ok"], result["failed"]) == (1, 0)
    [report] = result["reports"]
    text = Path(report["path"]).read_text()
    assert REPORT.strip() in text and f"{searx.url}/page/2" in text  # the model server wrote the report

    rows = usage_rows(ledger_url, report["report_id"])
    by_model = {r[0]: r for r in rows}
    # every embeddings request the gateway passed on was counted, at the configuration's price: 0, known
    embedded = len(gateway.embeddings.requests) - embedded_before
    embeddings = by_model.pop(gateway.embedding_model)
    assert embeddings[1] == embeddings[4] == embedded > 0 and embeddings[2] > 0 and embeddings[5] == 0
    [(model, requests, prompt, completion, priced, cost)] = by_model.values()  # the chat model, one row
    assert requests >= 3 and prompt > completion > 0 and priced == requests  # agent, queries, report at least
    # the gateway's cost: the test prices times the tokens the model server counted, not an estimate
    assert cost == pytest.approx(prompt * TEST_INPUT_COST + completion * TEST_OUTPUT_COST, rel=1e-6)
    with open_ledger(ledger_url).connect() as conn:
        stored = conn.execute(
            "SELECT status, cost_usd, estimated_cost_usd FROM research_reports WHERE report_id = %s",
            (report["report_id"],),
        ).fetchone()
    assert stored == ("completed", pytest.approx(cost), None) and result["cost_usd"] == pytest.approx(cost)

    artifacts = flow_run_artifacts(state)
    [report_artifact] = artifacts["research-report"]
    assert report_artifact.data == text  # the report, its sources and its usage table, as in the file
    assert f"| {model} | {requests} | {prompt} | {completion} | ${cost:.6f} |" in text
    assert f"| {gateway.embedding_model} | {embedded} | {embeddings[2]} | 0 | $0.000000 |" in text
    assert f"Cost: ${cost:.6f} ·" in text
    [summary] = artifacts["research-summary"]
    assert "| How do Prefect work pools route runs? | ok |" in (summary.data or "")
    tokens = prompt + completion + embeddings[2]  # embeddings have prompt tokens only
    assert f"| {tokens} | ${cost:.6f} |" in (summary.data or "")


@needs_gptr
@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_a_query_that_times_out_does_not_stop_the_others_and_unpriced_calls_cost_unknown(
    pg_ledger_url: str, tmp_path: Path
) -> None:
    """A gateway that never answers is a fault no real server produces on demand: the hand-written server's.
    It reports tokens but no cost, as vLLM does."""
    ledger_url = pg_ledger_url  # one backend: each run waits out the timeout
    with run_fake_openai() as llm, run_fake_searxng() as searx:
        llm.chat_responder = answer
        state = research(
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
            timeout_s=20,  # the good query takes ~3 s on an idle machine; the hung one waits all of it out
            local_context_k=0,
            return_state=True,
        )
        assert "prefect work pool routing" in searx.queries  # gpt-researcher searched via SearXNG
    result = state.result()
    assert (result["ok"], result["failed"], result["cost_usd"]) == (1, 1, None)
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
    assert ok_row[4] is None and ok_row[5] > 0  # no cost reported: unknown, not an estimate
    [(model, requests, prompt, completion, priced, cost)] = usage_rows(ledger_url, good["report_id"])
    assert (model, priced, cost) == ("fake-model", 0, None) and requests >= 3 and prompt > 0 and completion > 0
    bad_row = by_query["[hang] a query the gateway never answers"]
    assert bad_row[1] == "failed" and bad_row[4] is None and bad_row[6] == "timed out after 20s"
    artifacts = flow_run_artifacts(state)
    [report_artifact] = artifacts["research-report"]  # none for the failed query
    assert report_artifact.data == text
    assert f"| fake-model | {requests} | {prompt} | {completion} | unknown |" in text and "Cost: unknown ·" in text
    summary = artifacts["research-summary"][0].data or ""
    assert "| [hang] a query the gateway never answers | failed | 0 | 0 | unknown |" in summary
    assert summary.count("| unknown |") == 2


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
def test_llm_searxng_and_ledger_blocks_win_over_the_plain_parameters(
    gateway: Gateway, pg_ledger_url: str, tmp_path: Path
) -> None:
    unused = tmp_path / "unused.db"
    with run_fake_searxng() as searx:
        OpenAICompatibleEndpoint(
            base_url=gateway.base_url,
            api_key=gateway.api_key,
            chat_model=gateway.chat_model,
            embedding_model=gateway.embedding_model,
        ).save("research-llm", overwrite=True)
        SearxngServer(url=searx.url).save("research-searx", overwrite=True)
        PostgresLedger(url=pg_ledger_url, password="research-ledger-pw").save("research-ledger", overwrite=True)
        result = research(
            "How do Prefect work pools route runs?",
            llm_base_url="http://127.0.0.1:1/v1",
            llm_api_key_env=None,
            searx_url="http://127.0.0.1:1",
            fast_llm="param-model",
            embedding_model="param-embed",
            llm_block="research-llm",
            searxng_block="research-searx",
            ledger_block="research-ledger",
            max_iterations=1,
            max_subtopics=1,
            gptr_python=GPTR_PYTHON,
            output_dir=str(tmp_path / "reports"),
            ledger_url=f"sqlite:///{unused}",
            timeout_s=120,
            local_context_k=0,
        )
        assert json.loads(QUERIES)[0] in searx.queries  # searched through the block's SearXNG
    # The gateway answers only its master key and its own model names: the block's key and chat model were sent.
    assert (result["ok"], result["failed"]) == (1, 0) and not unused.exists()
    with open_ledger(pg_ledger_url).connect() as conn:  # the report row is in the block's database
        assert conn.execute("SELECT status FROM research_reports").fetchall() == [("completed",)]
    [(_, requests, _, _, priced, cost)] = usage_rows(pg_ledger_url, result["reports"][0]["report_id"])
    assert requests >= 3 and priced == requests and cost > 0  # priced: the gateway answered them all


@needs_gptr
@pytest.mark.slow
@pytest.mark.usefixtures("offline")
def test_hybrid_research_reads_the_projects_own_collection(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync
    from testkit.documents import write_document

    docs = tmp_path / "docs"
    docs.mkdir()
    write_document(docs / "pools.md", "Our thanos work pool only accepts embedding batches from rag-sync.")
    rag_config = {"data_dir": str(tmp_path / "rag")}
    assert rag_sync(LocalFolderSpec(path=str(docs)), rag_config)["indexed"] == 1

    monkeypatch.setenv("TEST_GATEWAY_KEY", gateway.api_key)
    monkeypatch.setenv("COMPRESSION_THRESHOLD", "0")  # rank even short documents by the gateway's embeddings
    embedded_before = len(gateway.embeddings.requests)
    with run_fake_searxng() as searx:
        result = research(
            "How do Prefect work pools route runs?",
            llm_base_url=gateway.base_url,
            llm_api_key_env="TEST_GATEWAY_KEY",
            searx_url=searx.url,
            fast_llm=gateway.chat_model,
            embedding_model=gateway.embedding_model,
            max_iterations=1,
            max_subtopics=1,
            gptr_python=GPTR_PYTHON,
            output_dir=str(tmp_path / "reports"),
            ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
            timeout_s=120,
            local_context_k=2,
            rag_config=rag_config,
        )
        assert json.loads(QUERIES)[0] in searx.queries  # and the web was searched too
    sent = json.dumps([body for _, body in gateway.embeddings.requests[embedded_before:]])
    assert result["ok"] == 1
    # gpt-researcher ranked the local chunk by the gateway's embeddings: it had it among its documents
    assert "only accepts embedding batches from rag-sync" in sent

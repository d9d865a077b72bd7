"""The rag-search flow: what `swarm search` finds, for the UI and other flows, as a table artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.common.errors import ConfigError
from flows.rag.rag_search import rag_search, render_hits
from flows.rag.search import HitView
from flows.rag.store_edge import close_edge
from testkit.documents import write_document
from tests.flows.cli_runner import run_swarm

TEXTS = {
    "bees.md": "Honey bees dance to tell the hive where flowers are.",
    "comets.txt": "Comets grow glowing tails when they pass close to the sun.",
}


def test_the_flow_finds_each_querys_document_and_publishes_the_hits(tmp_path: Path) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    for name, text in TEXTS.items():
        write_document(docs / name, text)
    assert run_swarm(data, "ingest", str(docs)).returncode == 0
    config = {"data_dir": str(data)}
    try:
        state = rag_search(["how do bees find flowers", "tails of comets"], k=2, config=config, return_state=True)
        as_reader = rag_search(["tails of comets"], k=1, reader="ann@example.com", config=config)
    finally:
        close_edge(data / "qdrant")
    result = state.result()
    assert result["mode"] == "hybrid"
    bees, comets = result["results"].values()
    assert bees[0]["title"] == "bees.md" and comets[0]["title"] == "comets.txt"
    assert [hit["rank"] for hit in bees] == [1, 2] and bees[0]["score"] >= bees[1]["score"]
    assert "Honey bees dance" in bees[0]["snippet"]
    # A local folder's files are readable by anyone: a named reader sees them too.
    assert as_reader["results"]["tails of comets"][0]["title"] == "comets.txt"
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["rag-search"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert "## how do bees find flowers" in artifact.data and "| 1 |" in artifact.data and "bees.md" in artifact.data


def test_groups_without_a_reader_are_refused_before_any_search(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="groups need a reader"):
        rag_search(["q"], groups=["eng"], config={"data_dir": str(tmp_path)})


def test_the_table_links_documents_and_escapes_pipes() -> None:
    row = HitView(1, 0.5, "Plan | draft", "Projects/plan.docx p.2", "https://drive.example/d/1", "a | b")
    text = render_hits({"q": [row], "nothing": []}, "dense", "ann@example.com")
    assert "# rag-search (dense search, as ann@example.com)" in text
    assert "| 1 | 0.500 | [Plan \\| draft (Projects/plan.docx p.2)](https://drive.example/d/1) | a \\| b |" in text
    assert "No results that ann@example.com may read." in text

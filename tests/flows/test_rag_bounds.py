"""Bounds per file under hostile input, end to end: a file over a limit is recorded with the limit and the setting
that sets it, and the other files of its batch are indexed and recorded as they finish."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from flows.rag.config import load_config
from flows.rag.resources import open_resources
from flows.rag.sources.local import LocalFolderSpec
from flows.rag.sync import rag_sync
from testkit.documents import FILLER, TOPICS, write_document, write_docx_bomb
from tests.flows.rag_checks import assert_consistent, config_for, ledger_rows


def _assert_indexed_beside(tmp_path: Path, ledger_url: str, config: dict[str, Any], names: set[str]) -> None:
    rows = ledger_rows(ledger_url)
    assert {name for name, row in rows.items() if row[0] == "indexed"} == names
    services = open_resources(load_config(config))
    points = assert_consistent(services.store, ledger_url)
    assert {p["doc_id"] for p in points} == names


def test_files_over_the_chunk_limit_are_skipped_with_its_reason_and_the_rest_index(tmp_path: Path) -> None:
    """A 3.5 MB CSV once became 8,093 chunks and a 67 KB docx 6,898: each is now one skipped file (small ones
    here, over a low limit, to keep the test quick)."""
    import docx

    docs = tmp_path / "docs"
    docs.mkdir()
    small = {"solar.docx", "llamas.md", "volcano.txt", "birds.csv"}
    for name in small:
        write_document(docs / name, TOPICS[name][0])
    rows = "".join(
        f'{n},"Sighting {n} of an emperor penguin colony on the sea ice near the station."\n' for n in range(200)
    )
    (docs / "sightings.csv").write_text("id,note\n" + rows)
    document = docx.Document()
    for n in range(60):
        document.add_paragraph(f"Paragraph {n}. " + FILLER)
    document.save(str(docs / "minutes.docx"))
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = config_for(tmp_path, ledger_url, max_chunks_per_file=10)

    result = rag_sync(LocalFolderSpec(path=str(docs)), config)

    assert (result["indexed"], result["skipped"]) == (len(small), 2)
    reason = "more than 10 chunks, over the limit per file (max_chunks_per_file, SWARM_MAX_CHUNKS_PER_FILE)"
    rows_now = ledger_rows(ledger_url)
    assert rows_now["sightings.csv"][:3] == ("skipped", reason, 0)
    assert rows_now["minutes.docx"][:3] == ("skipped", reason, 0)
    _assert_indexed_beside(tmp_path, ledger_url, config, small)


@pytest.mark.slow
def test_a_zip_bomb_is_stopped_by_the_parser_memory_limit_and_the_batch_goes_on(tmp_path: Path) -> None:
    """A docx of ~3 MB whose XML inflates to 1 GB: the parser process's address-space limit stops it, that file
    fails with the limit's reason, and the same parser process goes on to index the other files."""
    docs = tmp_path / "docs"
    docs.mkdir()
    write_docx_bomb(docs / "bomb.docx", inflated_mb=1024)
    write_document(docs / "solar.docx", TOPICS["solar.docx"][0])
    write_document(docs / "llamas.md", TOPICS["llamas.md"][0])
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    # One parser, so the files after the bomb are parsed by the process that hit the limit.
    config = config_for(tmp_path, ledger_url, parse_memory_mb=1024, parse_workers=1)

    result = rag_sync(LocalFolderSpec(path=str(docs)), config)

    assert (result["indexed"], result["failed"]) == (2, 1)
    assert ledger_rows(ledger_url)["bomb.docx"][:2] == (
        "failed",
        "parsing needs more memory than the parser's limit of 1024 MB (parse_memory_mb, SWARM_PARSE_MEMORY_MB)",
    )
    _assert_indexed_beside(tmp_path, ledger_url, config, {"solar.docx", "llamas.md"})


def test_a_slow_file_does_not_hold_back_the_other_files_outcomes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other files' outcomes reach the ledger while one file of the batch is still being parsed (a 3.5 MB
    CSV once held every other file's outcome back for 5 of 5.5 minutes)."""
    from flows.rag import pipeline

    docs = tmp_path / "docs"
    docs.mkdir()
    others = {"llamas.md", "volcano.txt", "kubernetes.html", "solar.docx"}
    for name in others | {"slow.txt"}:
        write_document(docs / name, TOPICS.get(name, ("Tide tables list the water height by hour.",))[0])
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    original = pipeline.BatchIndexer._fetch_and_parse
    seen_while_slow: list[dict[str, str]] = []

    def slow_parse(self: pipeline.BatchIndexer, ref: Any) -> Any:
        if ref.name == "slow.txt":  # parses until the others are recorded, or 90 s
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                statuses = {name: row[0] for name, row in ledger_rows(ledger_url).items() if name != "slow.txt"}
                if set(statuses.values()) == {"indexed"}:
                    break
                time.sleep(0.5)
            seen_while_slow.append(statuses)
        return original(self, ref)

    monkeypatch.setattr(pipeline.BatchIndexer, "_fetch_and_parse", slow_parse)
    result = rag_sync(LocalFolderSpec(path=str(docs)), config_for(tmp_path, ledger_url))

    assert result["indexed"] == len(others) + 1
    assert seen_while_slow == [dict.fromkeys(others, "indexed")]

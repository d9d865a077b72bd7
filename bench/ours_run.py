"""One rag-sync run (our pipeline) for bench_peer.py, with the peer's chunking settings.

    .venv/bin/python bench/ours_run.py DOCS DATA_DIR PROCESSES

Prints one JSON line: the sync's summary (chunks embedded in this run, stage seconds).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Same chunking as the peer: by_title, 1,000 characters, no soft bound, no overlap, no combining.
PEER_CHUNKING = {
    "chunk_max_chars": 1000,
    "chunk_new_after_chars": 1000,
    "chunk_overlap_chars": 0,
    "chunk_combine_under_chars": 0,
}


def main() -> None:
    docs, data_dir, processes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from flows.rag.config import load_config
    from flows.rag.parser_pool import get_parser_pool
    from flows.rag.sources.local import LocalFolderSpec
    from flows.rag.sync import rag_sync

    config = {"data_dir": data_dir, "parse_workers": processes, **PEER_CHUNKING}
    stats = rag_sync(LocalFolderSpec(path=docs), config)
    get_parser_pool(processes, load_config(config).parse_memory_mb).shutdown()
    print(
        json.dumps({k: stats[k] for k in ("indexed", "failed", "skipped", "chunks", "split_chunks", "stage_seconds")})
    )


if __name__ == "__main__":
    main()

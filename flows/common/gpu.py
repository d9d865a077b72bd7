"""The node's GPU slot: a global concurrency limit (``gpu:<node>``) that GPU work holds while it runs.

A node's block sets ``SWARM_GPU_SLOT`` for every run on its pool; a machine without one (CPU, the CLI) holds
nothing. Strict: a named limit that is missing on the server fails the run, never a silent free-for-all.
Holders: the indexing of a batch (flows/rag/ingest_batch.py), vLLM on starlord (flows/inference/batch_inference.py),
and query embedding when its device is cuda (flows/rag/embed.py's embed_queries); queries under device auto
(``swarm search``, research's local context) run on the CPU and leave the GPU to the slot's holder, and so does the
preflight: it reads the card through nvidia-smi and loads the model on the CPU (flows/ops/preflight.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from prefect.concurrency.sync import concurrency


def node_gpu_slot() -> str | None:
    """The slot this node's runs hold for GPU work (``SWARM_GPU_SLOT``), or None on a node without a GPU."""
    return os.environ.get("SWARM_GPU_SLOT") or None


@contextmanager
def gpu_section(slot: str | None) -> Iterator[None]:
    """Hold ``slot`` (if any) for the whole block; leases renew in the background, so a short API outage
    must not kill an hour-long batch."""
    guard = concurrency(slot, occupy=1, strict=True, raise_on_lease_renewal_failure=False) if slot else nullcontext()
    with guard:
        yield

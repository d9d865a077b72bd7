"""What a node's deployments need, read from ``prefect.yaml`` (pure: a parsed spec in, a ``NodeNeeds`` out).

The deployments of a pool say what the node must provide: blocks by name (any ``*_block`` parameter, nested ones
included), folders (``*_dir`` parameters to write, a local source's ``path`` to read), job variables that beat
the worker's environment, and through their tags the services and hardware (``rag``: Qdrant and the embedding
model, ``research``: gpt-researcher and the same, ``gpu``: a visible GPU and its concurrency slot). The model is
loaded only where a deployment embeds: a ``rag-sync`` with ``dispatch: deployment`` plans, its batches embed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

QDRANT, EMBEDDING, EMBEDS, GPTR, GPU = "qdrant", "embedding", "embeds", "gptr", "gpu"
TAG_NEEDS: dict[str, frozenset[str]] = {
    "rag": frozenset({QDRANT, EMBEDDING}),
    "research": frozenset({QDRANT, EMBEDDING, GPTR}),  # local context comes from the project's collection
    "gpu": frozenset({GPU}),
}


@dataclass(frozen=True)
class BlockRef:
    parameter: str  # the parameter's last key, which says the block's type (``ledger_block``, ...)
    name: str
    where: str  # ``<deployment> <dotted parameter path>``, for the report


@dataclass(frozen=True)
class NodeNeeds:
    node: str
    needs: frozenset[str] = frozenset()
    blocks: tuple[BlockRef, ...] = ()
    write_dirs: tuple[str, ...] = ()
    read_dirs: tuple[str, ...] = ()
    gptr_python: str | None = None  # what a research run on this node would use, when a deployment sets it


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(dotted path, value)`` of nested parameters, dicts and lists alike."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    else:
        yield path, value


def _pool(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return deployment.get("work_pool") or {}


def node_needs(spec: Mapping[str, Any], node: str) -> NodeNeeds:
    """What the deployments of ``spec`` on pool ``node`` need from that node."""
    mine = [d for d in spec.get("deployments") or [] if _pool(d).get("name") == node]
    needs: set[str] = set()
    blocks: list[BlockRef] = []
    write_dirs: list[str] = []
    read_dirs: list[str] = []
    gptr_python = None
    for deployment in mine:
        tags = set(deployment.get("tags") or [])
        for tag in tags:
            needs |= TAG_NEEDS.get(tag, frozenset())
        parameters = deployment.get("parameters") or {}
        if tags & {"rag", "research"} and parameters.get("dispatch") != "deployment":
            needs.add(EMBEDS)
        for path, value in _walk(parameters):
            key = path.rsplit(".", 1)[-1]
            if key.endswith("_block") and isinstance(value, str) and value:
                blocks.append(BlockRef(key, value, f"{deployment['name']} {path}"))
            elif key.endswith("_dir") and isinstance(value, str) and value:
                write_dirs.append(value)
        source = parameters.get("source")
        if isinstance(source, Mapping) and source.get("kind") == "local" and source.get("path"):
            read_dirs.append(str(source["path"]))
        env = {str(k): str(v) for k, v in ((_pool(deployment).get("job_variables") or {}).get("env") or {}).items()}
        if "gptr_python" in parameters or "SWARM_GPTR_PYTHON" in env:  # a parameter beats the job's env
            gptr_python = parameters.get("gptr_python") or env.get("SWARM_GPTR_PYTHON")
    return NodeNeeds(
        node=node,
        needs=frozenset(needs),
        blocks=tuple(dict.fromkeys(blocks)),
        write_dirs=tuple(dict.fromkeys(write_dirs)),
        read_dirs=tuple(dict.fromkeys(read_dirs)),
        gptr_python=gptr_python,
    )


def worker_healthcheck(unit_text: str) -> tuple[str | None, int | None] | None:
    """Host and port the worker's health-check server binds, as its systemd unit sets them (None for one the unit
    leaves to Prefect's default); None when the unit starts the worker without ``--with-healthcheck``."""
    starts = [line for line in unit_text.splitlines() if line.strip().startswith("ExecStart=")]
    if not any("--with-healthcheck" in line for line in starts):
        return None
    host = re.search(r"PREFECT_WORKER_WEBSERVER_HOST=([^\s\"]+)", unit_text)
    port = re.search(r"PREFECT_WORKER_WEBSERVER_PORT=(\d+)", unit_text)
    return (host.group(1) if host else None), (int(port.group(1)) if port else None)

"""Where a batch-inference run may read and write: under the node's data folder or a folder the node allows.

A run's paths are parameters anyone who can start the deployment chooses; the node decides where they may
point: ``SWARM_DATA_DIR`` (relative paths are taken from there) plus ``SWARM_BATCH_ROOTS``, a list of
folders separated by ``:``. Paths are compared after resolving symlinks, so a link cannot lead out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from flows.common.blocks import data_dir
from flows.common.errors import ConfigError


def batch_roots() -> list[Path]:
    """This node's allowed folders: the data folder first, then ``SWARM_BATCH_ROOTS``."""
    extra = [Path(p).expanduser() for p in os.environ.get("SWARM_BATCH_ROOTS", "").split(os.pathsep) if p]
    return [data_dir(), *extra]


def confine(path: str, roots: Sequence[Path], parameter: str) -> Path:
    """``path`` resolved (relative to the first root), if it lies under one of ``roots``; else a ConfigError."""
    resolved = (roots[0] / Path(path).expanduser()).resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ConfigError(
            f"{parameter} {path} is outside this node's batch folders ({allowed}): put it there or add its"
            " folder to SWARM_BATCH_ROOTS on the node"
        )
    return resolved

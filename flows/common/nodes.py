"""The cluster's nodes. Each is also the name of its Prefect work pool (prefect.yaml, the bootstrap)."""

from typing import Literal, get_args

Node = Literal["oracle", "starlord", "thanos"]
NODES: tuple[str, ...] = get_args(Node)

"""What is particular to one node (paths, GPU, parallelism) as a Prefect block."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field


class NodeSettings(Block):
    """Settings of one machine of the cluster, saved as ``node-<name>``.

    ``env()`` gives the ``SWARM_*`` variables the flows read; the bootstrap creates ``node-<pool>`` from
    ``deployments/work-pools/<pool>.json`` when it is missing (an existing block is never overwritten) and
    writes its ``env()`` into the pool's base job template, so every run on that pool gets them.

    Example:
        ```python
        from blocks.node import NodeSettings

        node = NodeSettings.load("BLOCK_NAME")
        print(node.env())
        ```
    """

    _block_type_name = "Swarm Node Settings"
    _documentation_url = "https://docs.prefect.io/v3/concepts/work-pools"  # type: ignore[assignment]

    node: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="Node name, the same as its work pool.")
    data_dir: str | None = Field(
        default=None, description="SWARM_DATA_DIR: home of the node's data; unset: the worker's own environment."
    )
    device: Literal["auto", "cpu", "cuda"] | None = Field(
        default=None, description="SWARM_DEVICE, the embedding device; unset: the worker's own environment."
    )
    cuda_visible_devices: str | None = Field(default=None, description="CUDA_VISIBLE_DEVICES for runs on this node.")
    gpu_slot: str | None = Field(
        default=None, description="Global concurrency limit guarding the GPU, e.g. gpu:thanos; none on CPU nodes."
    )
    parse_workers: int | None = Field(
        default=None, ge=0, le=64, description="SWARM_PARSE_WORKERS: parser processes (0: one per spare core)."
    )
    hf_home: str | None = Field(default=None, description="HF_HOME model cache for runs on this node.")
    extra_env: dict[str, str] = Field(
        default_factory=dict,
        description="Other environment variables for every run on this node, e.g. VLLM_WORKER_MULTIPROC_METHOD.",
    )

    def env(self) -> dict[str, str]:
        """The variables every run on this node gets; unset fields are left out, so the worker's own
        environment (its systemd unit) still decides them."""
        fields = {
            "SWARM_NODE": self.node,
            "SWARM_DATA_DIR": self.data_dir,
            "SWARM_DEVICE": self.device,
            "SWARM_PARSE_WORKERS": None if self.parse_workers is None else str(self.parse_workers),
            "SWARM_GPU_SLOT": self.gpu_slot,
            "CUDA_VISIBLE_DEVICES": self.cuda_visible_devices,
            "HF_HOME": self.hf_home,
        }
        return {**self.extra_env, **{k: v for k, v in fields.items() if v is not None}}

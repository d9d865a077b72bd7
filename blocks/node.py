"""What is particular to one node (paths, GPU, parallelism) as a Prefect block."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field


class NodeSettings(Block):
    """Settings of one machine of the cluster, saved as ``node-<name>``.

    ``env()`` gives the ``SWARM_*`` variables the flows read; the bootstrap writes them into the node's
    work-pool base job template, so every run on that pool gets them.

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
    data_dir: str = Field(default="/srv/swarm-data", description="Home of the node's data (ledger fallbacks, reports).")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Embedding device.")
    cuda_visible_devices: str | None = Field(default=None, description="CUDA_VISIBLE_DEVICES for runs on this node.")
    gpu_slot: str | None = Field(
        default=None, description="Global concurrency limit guarding the GPU, e.g. gpu:thanos; none on CPU nodes."
    )
    parse_workers: int = Field(default=0, ge=0, le=64, description="Parser processes; 0: one per spare core.")
    hf_home: str | None = Field(default=None, description="HF_HOME model cache for runs on this node.")

    def env(self) -> dict[str, str]:
        env = {
            "SWARM_NODE": self.node,
            "SWARM_DATA_DIR": self.data_dir,
            "SWARM_DEVICE": self.device,
            "SWARM_PARSE_WORKERS": str(self.parse_workers),
        }
        if self.gpu_slot:
            env["SWARM_GPU_SLOT"] = self.gpu_slot
        if self.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        if self.hf_home:
            env["HF_HOME"] = self.hf_home
        return env

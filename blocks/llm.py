"""An OpenAI-compatible endpoint (vLLM on starlord, the LiteLLM gateway on oracle) as a Prefect block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class OpenAICompatibleEndpoint(Block):
    """An OpenAI-compatible HTTP API: its base URL, API key and the model names it serves.

    Example:
        ```python
        from blocks.llm import OpenAICompatibleEndpoint

        gateway = OpenAICompatibleEndpoint.load("BLOCK_NAME")
        headers = {"Authorization": f"Bearer {gateway.api_key_value()}"}
        ```
    """

    _block_type_name = "Swarm OpenAI-compatible Endpoint"
    _documentation_url = "https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html"  # type: ignore[assignment]

    base_url: str = Field(
        description="Base URL including /v1, e.g. http://oracle:4000/v1 (the batch flow strips the /v1)."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer token (hidden in the UI and logs).")
    chat_model: str = Field(default="default", description="Model name for chat and completions.")
    embedding_model: str | None = Field(default=None, description="Model name for embeddings, if served.")

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    def server_url(self) -> str:
        """The server's root: ``base_url`` without a trailing ``/v1``. vLLM's ``/health`` lives there, and
        the ``url`` of every OpenAI Batch line (``/v1/chat/completions``) is relative to it."""
        return self.base_url.rstrip("/").removesuffix("/v1")

"""The OpenAI-compatible servers a batch talks to: a saved endpoint block, or a URL plus an API-key env name.

A block wins over the URL and env name. Its ``base_url`` includes ``/v1`` (the form OpenAI clients want);
the batch flow needs the server's root instead, because each batch line's ``url`` is ``/v1/...`` and vLLM's
``/health`` is at the root, so the ``/v1`` is stripped here and only here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from blocks.llm import OpenAICompatibleEndpoint
from flows.common.blocks import resolve_block


@dataclass(frozen=True)
class Endpoint:
    url: str  # the server's root, without /v1
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None  # the block's chat_model: the default for bodies that name no model


def resolve_endpoint(
    block: OpenAICompatibleEndpoint | str | None, parameter: str, url: str | None, api_key_env: str | None
) -> Endpoint | None:
    """The endpoint block (picked in the UI, or a saved block's name; ConfigError naming ``parameter`` when
    unknown) if given, else ``url`` with the key from ``$api_key_env``; None when neither is set."""
    if block := resolve_block(OpenAICompatibleEndpoint, block, parameter):
        return Endpoint(block.server_url(), block.api_key_value(), block.chat_model)
    if not url:
        return None
    return Endpoint(url, os.environ.get(api_key_env) if api_key_env else None)

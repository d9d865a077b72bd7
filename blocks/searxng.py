"""The SearXNG metasearch server (thanos) as a Prefect block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field


class SearxngServer(Block):
    """SearXNG, the web search gpt-researcher uses (its JSON API must be enabled).

    Example:
        ```python
        from blocks.searxng import SearxngServer

        searx = SearxngServer.load("BLOCK_NAME")
        print(searx.url)
        ```
    """

    _block_type_name = "Swarm SearXNG Server"
    _documentation_url = "https://docs.searxng.org/dev/search_api.html"  # type: ignore[assignment]

    url: str = Field(description="Base URL of the server, e.g. http://thanos:8080.")

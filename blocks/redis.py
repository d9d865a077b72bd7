"""Redis (oracle) as a Prefect block: a URL without password plus the password apart."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class RedisServer(Block):
    """The cluster's Redis, backed up nightly and probed by the health flow.

    Example:
        ```python
        from blocks.redis import RedisServer

        redis = RedisServer.load("BLOCK_NAME")
        print(redis.url)
        ```
    """

    _block_type_name = "Swarm Redis Server"
    _documentation_url = "https://redis.io/docs/latest/develop/clients/"  # type: ignore[assignment]

    url: str = Field(description="redis://host:6379/0, without a password.")
    password: SecretStr | None = Field(default=None, description="AUTH password (hidden in the UI and logs).")

    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password else None

"""The PostgreSQL ledger's connection as a Prefect block: a URL without password plus the password apart."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator


class PostgresLedger(Block):
    """The ledger database (documents, cursors, reports, jobs, backups) on oracle's PostgreSQL.

    The URL holds no password (the UI shows it); the password is a secret that is only put into the
    connection string when a flow connects.

    Example:
        ```python
        from blocks.postgres import PostgresLedger

        ledger = PostgresLedger.load("BLOCK_NAME")
        dsn = ledger.connection_url()
        ```
    """

    _block_type_name = "Swarm Postgres Ledger"
    _documentation_url = "https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-URIS"  # type: ignore[assignment]

    url: str = Field(description="postgresql://user@host:5432/database, without a password.")
    password: SecretStr | None = Field(default=None, description="Password of the user (hidden in the UI and logs).")

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("url must start with postgresql://")
        if parts.password:
            raise ValueError("put the password in the password field, not in the url")
        return value

    def connection_url(self) -> str:
        """The URL with the password inserted (never log it)."""
        if self.password is None:
            return self.url
        parts = urlsplit(self.url)
        user = quote(parts.username or "", safe="")
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        netloc = f"{user}:{quote(self.password.get_secret_value(), safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

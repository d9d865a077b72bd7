"""Google Drive credentials as a Prefect block: a service-account key or an authorized-user token."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field, model_validator

DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"


class GoogleDriveCredentials(Block):
    """Read-only access to Google Drive for the RAG sync.

    Give either a service-account key (optionally with ``subject`` to impersonate a Workspace user through
    domain-wide delegation) or an authorized-user token (the JSON written by an OAuth consent flow).
    The scope is always ``drive.readonly``. Secrets are stored encrypted and never shown or logged.

    Example:
        ```python
        from blocks.gdrive import GoogleDriveCredentials

        block = GoogleDriveCredentials.load("BLOCK_NAME")
        creds = block.get_credentials()
        ```
    """

    _block_type_name = "Google Drive Credentials"
    _documentation_url = "https://developers.google.com/workspace/drive/api/guides/about-auth"  # type: ignore[assignment]
    _logo_url = "https://www.gstatic.com/images/branding/product/2x/drive_2020q4_48dp.png"  # type: ignore[assignment]

    service_account_info: SecretDict | None = Field(
        default=None, description="The service account's JSON key, as a dictionary."
    )
    subject: str | None = Field(
        default=None,
        description="User e-mail to impersonate with domain-wide delegation (service accounts only).",
    )
    authorized_user_info: SecretDict | None = Field(
        default=None,
        description="An authorized-user token (client_id, client_secret, refresh_token), as a dictionary.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GoogleDriveCredentials:
        if (self.service_account_info is None) == (self.authorized_user_info is None):
            raise ValueError("give exactly one of service_account_info or authorized_user_info")
        if self.subject and self.service_account_info is None:
            raise ValueError("subject (domain-wide delegation) needs a service account key")
        return self

    def get_credentials(self) -> Any:
        """google-auth credentials limited to drive.readonly."""
        if self.service_account_info is not None:
            from google.oauth2 import service_account

            creds = service_account.Credentials.from_service_account_info(
                self.service_account_info.get_secret_value(), scopes=[DRIVE_READONLY]
            )
            return creds.with_subject(self.subject) if self.subject else creds
        from google.oauth2.credentials import Credentials

        assert self.authorized_user_info is not None
        return Credentials.from_authorized_user_info(
            self.authorized_user_info.get_secret_value(), scopes=[DRIVE_READONLY]
        )

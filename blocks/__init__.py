"""Prefect Block classes for typed configuration and secrets; ``prefect block register -m blocks`` finds them."""

from blocks.gdrive import GoogleDriveCredentials

__all__ = ["GoogleDriveCredentials"]

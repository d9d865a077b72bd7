"""Prefect Block classes for typed configuration and secrets; ``prefect block register -m blocks`` finds them."""

from blocks.gdrive import GoogleDriveCredentials
from blocks.llm import OpenAICompatibleEndpoint
from blocks.node import NodeSettings
from blocks.postgres import PostgresLedger
from blocks.qdrant import QdrantConnection
from blocks.redis import RedisServer
from blocks.searxng import SearxngServer

__all__ = [
    "GoogleDriveCredentials",
    "NodeSettings",
    "OpenAICompatibleEndpoint",
    "PostgresLedger",
    "QdrantConnection",
    "RedisServer",
    "SearxngServer",
]

"""Event names the flows emit, in one place so automations and code agree (docs/prefect-practice.md).

Names follow ``swarm.<domain>.<past-tense-or-state>``; resource ids are ``swarm.<kind>.<name>``.
"""

from __future__ import annotations

SERVICE_DOWN = "swarm.service.down"
SERVICE_RECOVERED = "swarm.service.recovered"
BACKUP_FAILED = "swarm.backup.failed"
BACKUP_SUCCEEDED = "swarm.backup.succeeded"


def service_resource_id(node: str, name: str) -> str:
    """The resource id of one service on one node, e.g. ``swarm.service.oracle.postgres``."""
    return f"swarm.service.{node}.{name}"


def backup_resource_id(kind: str, target: str) -> str:
    return f"swarm.backup.{kind}.{target}"

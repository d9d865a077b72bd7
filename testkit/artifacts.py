"""The artifacts a flow run created, read back from the Prefect API, for tests to assert their content."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import ArtifactSort
from prefect.states import State


def flow_run_artifacts(run: UUID | State) -> dict[str, list[Artifact]]:
    """Each key's artifacts of that flow run (or of the run a returned state belongs to), oldest first."""
    flow_run_id = run.state_details.flow_run_id if isinstance(run, State) else run
    assert flow_run_id is not None, "a state of no flow run"
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    by_key: dict[str, list[Artifact]] = {}
    for artifact in reversed(found):
        by_key.setdefault(artifact.key or "", []).append(artifact)
    return by_key

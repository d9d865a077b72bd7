"""prefect.yaml is the one list of deployments: it loads, every entry is deployable as written, and every
flow of the project is in it."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.steps.core import StepExecutionError, run_steps
from prefect.exceptions import ParameterTypeError
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.templating import PlaceholderType, find_placeholders

from tests.e2e.systemd import parse_env_file, read_service

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deployments" / "systemd"
POOLS = {"oracle", "starlord", "thanos"}
# Parameters a deployment cannot default: given by the caller at run time (rag-sync, or the user); with a
# sample value each, so the rest of the deployment's parameters are validated together with them.
RUNTIME_ONLY: dict[str, dict[str, Any]] = {
    "ingest-batch/thanos": {"source": {"kind": "local", "path": "/srv/swarm-data/inbox"}, "documents": []},
    "restore/manual": {"backup_id": "0b7c"},
    "rag-search/thanos": {"queries": ["which card embeds the documents?"]},
}


def load_spec() -> dict[str, Any]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


SPEC = load_spec()
DEPLOYMENTS = SPEC["deployments"]
_flows: dict[str, Flow[Any, Any]] = {}


def flow_of(entrypoint: str) -> Flow[Any, Any]:
    if entrypoint not in _flows:
        _flows[entrypoint] = load_flow_from_entrypoint(str(REPO / entrypoint))
    return _flows[entrypoint]


def full_name(deployment: dict[str, Any]) -> str:
    return f"{flow_of(deployment['entrypoint']).name}/{deployment['name']}"


def ids() -> list[str]:
    return [f"{d['entrypoint'].split(':')[1]}-{d['name']}" for d in DEPLOYMENTS]


def test_the_pull_steps_leave_the_checkout_to_the_node() -> None:
    """`prefect deploy` fills every "{{ $VAR }}" from the deploying shell, so none may name the checkout."""
    env_placeholders = [p.name for p in find_placeholders(SPEC["pull"]) if p.type == PlaceholderType.ENV_VAR]
    assert env_placeholders == []
    assert all("pull" not in d for d in DEPLOYMENTS)  # nobody opts out of them


def test_the_pull_steps_enter_the_checkout_named_by_the_workers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the steps change this process's directory; monkeypatch changes it back
    checkout = tmp_path / "checkout with a space"
    checkout.mkdir()
    monkeypatch.setenv("SWARM_REPO", str(checkout))
    run_coro_as_sync(run_steps(SPEC["pull"]))
    assert Path.cwd() == checkout
    monkeypatch.delenv("SWARM_REPO")
    with pytest.raises(StepExecutionError) as failed:
        run_coro_as_sync(run_steps(SPEC["pull"]))
    assert "SWARM_REPO: is not set in this worker environment" in str(failed.value.__cause__)


def test_no_deployment_overrides_the_nodes_own_environment() -> None:
    """A job variable beats the worker's environment: what the unit and worker.env set stays the node's."""
    unit = read_service(SYSTEMD / "prefect-worker@.service", "thanos")
    node = set(unit.environment) | set(parse_env_file((SYSTEMD / "worker.env.example").read_text()))
    for deployment in DEPLOYMENTS:
        env = (deployment["work_pool"].get("job_variables") or {}).get("env") or {}
        assert node.isdisjoint(env), f"{deployment['name']} overrides {sorted(node & set(env))}"


def test_thanos_runs_gpt_researcher_from_the_venv_the_install_builds() -> None:
    assert "-m venv .venv-gptr" in (REPO / "scripts" / "install.sh").read_text()  # in the checkout
    unit = read_service(SYSTEMD / "prefect-worker@.service", "thanos")
    example = (SYSTEMD / "worker.env.example").read_text()
    env = unit.env(lambda path: example if path == "/etc/swarm/worker.env" else None, "/var/lib/swarm")
    assert env.get("SWARM_GPTR_PYTHON") == f"{env['SWARM_REPO']}/.venv-gptr/bin/python"


def test_a_local_folder_is_synced_on_the_node_that_has_it() -> None:
    [sync] = [d for d in DEPLOYMENTS if d["name"] == "local-hourly"]
    assert sync["parameters"]["source"] == {"kind": "local", "path": "/srv/swarm-data/inbox"}  # thanos's inbox
    assert (sync["work_pool"]["name"], sync["parameters"]["dispatch"]) == ("thanos", "in-process")
    assert "thanos" in sync["description"]


def test_a_drive_sync_without_a_scope_is_not_scheduled() -> None:
    drive_syncs = [d for d in DEPLOYMENTS if (d.get("parameters") or {}).get("source", {}).get("kind") == "gdrive"]
    assert drive_syncs
    for deployment in drive_syncs:
        source = deployment["parameters"]["source"]
        if not (source.get("folder_ids") or source.get("drive_ids")):
            assert deployment["schedules"] and all(s.get("active") is False for s in deployment["schedules"])


def test_deployment_names_are_unique_per_flow() -> None:
    names = Counter(full_name(d) for d in DEPLOYMENTS)
    assert [name for name, count in names.items() if count > 1] == []


def test_every_flow_of_the_project_is_deployed() -> None:
    declared = set()
    for path in (REPO / "flows").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "flow":
                declared |= {kw.value.value for kw in node.keywords if kw.arg == "name"}
    deployed = {flow_of(d["entrypoint"]).name for d in DEPLOYMENTS}
    assert declared - deployed == set()


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=ids())
def test_each_deployment_declares_its_pool_tags_and_schedules(deployment: dict[str, Any]) -> None:
    assert deployment["work_pool"]["name"] in POOLS
    assert deployment.get("tags"), "tags make runs findable in the UI"
    assert "schedules" in deployment, "a manual deployment says so with schedules: []"
    for schedule in deployment["schedules"]:
        assert schedule.get("timezone") and schedule.get("slug")
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # what the server would check
    if deployment["schedules"]:
        assert deployment.get("concurrency_limit"), "a scheduled flow must not overlap itself"


def test_a_broken_cron_is_rejected_by_the_same_check() -> None:
    with pytest.raises(ValueError):
        CronSchedule(cron="61 * * * *", timezone="UTC")


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=ids())
def test_each_entrypoint_loads_and_its_parameters_validate(deployment: dict[str, Any]) -> None:
    flow = flow_of(deployment["entrypoint"])
    params = dict(deployment.get("parameters") or {})
    runtime = RUNTIME_ONLY.get(full_name(deployment), {})
    required = set(flow.parameters.required or [])
    assert required - set(params) == set(runtime), "a required parameter has no default in prefect.yaml"
    flow.validate_parameters(params | runtime)


def test_a_wrong_parameter_is_refused_naming_it() -> None:
    [sync] = [d for d in DEPLOYMENTS if d["name"] == "local-hourly"]
    flow = flow_of(sync["entrypoint"])
    with pytest.raises(ParameterTypeError, match="max_in_flight"):
        flow.validate_parameters(sync["parameters"] | {"max_in_flight": 0})
    with pytest.raises(ParameterTypeError, match="dispatch"):
        flow.validate_parameters(sync["parameters"] | {"dispatch": "carrier-pigeon"})


def test_the_ingest_deployment_named_by_rag_sync_exists() -> None:
    names = {full_name(d) for d in DEPLOYMENTS}
    for deployment in DEPLOYMENTS:
        params = deployment.get("parameters") or {}
        if params.get("dispatch") == "deployment":
            assert params["ingest_deployment"] in names
            assert full_name(deployment).startswith("rag-sync/")


def test_rag_sync_parameters_render_as_a_typed_form() -> None:
    [sync] = [d for d in DEPLOYMENTS if d["name"] == "local-hourly"]
    schema = flow_of(sync["entrypoint"]).parameters.model_dump()
    props = schema["properties"]
    assert props["dispatch"]["enum"] == ["in-process", "deployment"]
    assert (props["max_in_flight"]["minimum"], props["max_in_flight"]["maximum"]) == (1, 64)
    assert "pattern" in props["ingest_deployment"]
    assert {"LocalFolderSpec", "GoogleDriveSpec"} <= set(schema["definitions"])  # one form branch per source

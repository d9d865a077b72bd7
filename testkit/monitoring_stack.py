"""The cluster's monitoring stack on loopback for the alerting tests: Debian's Alertmanager, node-exporter
(textfile collector only) and Prometheus, each on a free port with its own data folder, configured from
``deployments/monitoring/``. Every process is stopped when its ``with`` block ends, also on failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from testkit.cluster import REPO, Proc, free_port, wait_until

MONITORING = REPO / "deployments" / "monitoring"
STARTUP_S = 60


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: scripts/install.sh --test installs Debian's package")
    return path


@contextmanager
def running(name: str, args: list[str], ready_url: str, log_dir: Path) -> Iterator[Proc]:
    """The process, once ``ready_url`` answers 200; stopped when the block ends, also on failure."""
    proc = Proc(name, args, dict(os.environ), log_dir)

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{name} exited:\n{proc.tail()}")
        try:
            return httpx.get(ready_url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, STARTUP_S, f"{name} at {ready_url}")
        yield proc
    finally:
        proc.stop()


@contextmanager
def alertmanager(work: Path) -> Iterator[str]:
    """The shipped alertmanager.yml; yields the base URL (what SWARM_ALERTMANAGER_URL names)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        binary("prometheus-alertmanager"),
        f"--config.file={MONITORING / 'alertmanager.yml'}",
        f"--storage.path={work / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: a single instance
    ]
    with running("alertmanager", args, f"{url}/-/ready", work):
        yield url


@contextmanager
def node_exporter(textfile_dir: Path, work: Path) -> Iterator[str]:
    """Only the textfile collector (what the health flow writes); yields host:port."""
    target = f"127.0.0.1:{free_port()}"
    args = [
        binary("prometheus-node-exporter"),
        f"--web.listen-address={target}",
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={textfile_dir}",
    ]
    with running("node-exporter", args, f"http://{target}/metrics", work):
        yield target


def prometheus_config(node_target: str, alertmanager_target: str, every: str = "1s") -> dict[str, Any]:
    """The shipped prometheus.yml with this machine's targets, short intervals and the shipped rules."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=every, evaluation_interval=every)
    config["rule_files"] = [str(MONITORING / name) for name in config["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager_target]}]
    [node] = [job for job in config["scrape_configs"] if job["job_name"] == "node"]
    node["static_configs"] = [{"targets": [node_target]}]
    config["scrape_configs"] = [node]
    return config


@contextmanager
def prometheus(work: Path, node_target: str, alertmanager_url: str) -> Iterator[str]:
    port = free_port()
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(node_target, alertmanager_url.removeprefix("http://"))))
    args = [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={work / 'prometheus'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running("prometheus", args, f"http://127.0.0.1:{port}/-/ready", work):
        yield f"http://127.0.0.1:{port}"


def alert_groups(alertmanager_url: str, alertname: str) -> list[dict[str, Any]]:
    """Alertmanager's groups (``/api/v2/alerts/groups``) holding alerts named ``alertname``."""
    groups = httpx.get(f"{alertmanager_url}/api/v2/alerts/groups", timeout=5).json()
    return [g for g in groups if any(a["labels"].get("alertname") == alertname for a in g["alerts"])]

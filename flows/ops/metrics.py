"""Health results as Prometheus text exposition: to a node-exporter textfile (default) or a Pushgateway.

The textfile is replaced atomically (write to a temp file in the same folder, then rename), so
node-exporter never scrapes half a file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx

from flows.ops.judges import DEGRADED, DOWN, SKIPPED, UNKNOWN, UP
from flows.ops.probes import HealthRow

STATUSES = (UP, DEGRADED, DOWN, UNKNOWN, SKIPPED)
# The folder Debian's prometheus-node-exporter reads (--collector.textfile.directory default).
DEFAULT_TEXTFILE = "/var/lib/prometheus/node-exporter/swarm_health.prom"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def format_metrics(rows: Sequence[HealthRow], sweep_seconds: float, timestamp: float) -> str:
    """The exposition text for one sweep (pure)."""
    lines = [
        "# HELP swarm_service_up 1 when the service answers (up or degraded), 0 when down.",
        "# TYPE swarm_service_up gauge",
    ]
    probed = [r for r in rows if r.status not in (UNKNOWN, SKIPPED)]
    for r in probed:
        lbl = _labels(service=r.service, node=r.node, kind=r.kind)
        lines.append(f"swarm_service_up{lbl} {0 if r.status == DOWN else 1}")
    lines += [
        "# HELP swarm_service_status 1 for the status the last sweep found, 0 for the others.",
        "# TYPE swarm_service_status gauge",
    ]
    for r in rows:
        for s in STATUSES:
            lbl = _labels(service=r.service, node=r.node, kind=r.kind, status=s)
            lines.append(f"swarm_service_status{lbl} {int(r.status == s)}")
    lines += [
        "# HELP swarm_service_probe_seconds How long the probe took.",
        "# TYPE swarm_service_probe_seconds gauge",
    ]
    for r in probed:
        lbl = _labels(service=r.service, node=r.node, kind=r.kind)
        lines.append(f"swarm_service_probe_seconds{lbl} {r.latency_ms / 1000:.4f}")
    lines += [
        "# HELP swarm_health_sweep_seconds Duration of the whole sweep.",
        "# TYPE swarm_health_sweep_seconds gauge",
        f"swarm_health_sweep_seconds {sweep_seconds:.4f}",
        "# HELP swarm_health_last_sweep_timestamp_seconds When the last sweep finished.",
        "# TYPE swarm_health_last_sweep_timestamp_seconds gauge",
        f"swarm_health_last_sweep_timestamp_seconds {timestamp:.3f}",
    ]
    return "\n".join(lines) + "\n"


def write_textfile(text: str, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".swarm_health.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # node-exporter usually runs as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def push_metrics(text: str, gateway_url: str, job: str = "swarm_health", timeout: float = 5.0) -> None:
    """PUT replaces every metric of this job group, so services removed from the inventory disappear."""
    resp = httpx.put(
        f"{gateway_url.rstrip('/')}/metrics/job/{job}",
        content=text.encode(),
        headers={"Content-Type": "text/plain; version=0.0.4"},
        timeout=timeout,
    )
    resp.raise_for_status()

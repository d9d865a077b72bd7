"""What the health sweep watches: a typed list of services per node, with defaults matching the cluster.

Override with a JSON/YAML file (a list of mappings, or ``{"services": [...]}``) or a list of dicts passed as
a flow parameter. Each entry has a name, a kind (which probe runs), a node and a target: an HTTP base URL,
a DSN (``postgresql://``, ``redis://``), a filesystem path (disk) or ``local`` (GPU through nvidia-smi).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows.common.errors import ConfigError
from flows.common.redact import refuse_password

HTTP_KINDS = frozenset(
    {
        "qdrant", "vllm", "litellm", "openwebui", "haproxy", "vault", "consul",
        "prometheus", "grafana", "alertmanager", "searxng", "prefect",
    }
)  # fmt: skip
# Probes that look at the machine the flow runs on: they only make sense on their own node.
LOCAL_KINDS = frozenset({"gpu", "disk"})
KINDS = HTTP_KINDS | LOCAL_KINDS | {"postgres", "redis"}
SECRET_OPTIONS = frozenset({"api_key", "bearer"})  # read from the variable their "<name>_env" option names


@dataclass(frozen=True)
class Service:
    name: str
    kind: str
    node: str
    target: str
    timeout_s: float | None = None
    # Kind-specific knobs: HAProxy's monitor path, an API key header, disk thresholds...
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.node}.{self.name}"

    @property
    def is_local(self) -> bool:
        return self.kind in LOCAL_KINDS


def _svc(name: str, kind: str, node: str, target: str, **options: Any) -> Service:
    return Service(name=name, kind=kind, node=node, target=target, options=options)


DEFAULT_SERVICES: tuple[Service, ...] = (
    _svc("postgres", "postgres", "oracle", "postgresql://postgres@oracle:5432/postgres"),
    _svc("redis", "redis", "oracle", "redis://oracle:6379/0"),
    _svc("litellm", "litellm", "oracle", "http://oracle:4000"),
    _svc("open-webui", "openwebui", "oracle", "http://oracle:3000"),
    _svc("haproxy", "haproxy", "oracle", "http://oracle:8080", monitor_uri="/healthz"),
    _svc("vault", "vault", "oracle", "http://oracle:8200"),
    _svc("consul", "consul", "oracle", "http://oracle:8500"),
    _svc("prometheus", "prometheus", "oracle", "http://oracle:9090"),
    _svc("grafana", "grafana", "oracle", "http://oracle:3001"),
    _svc("alertmanager", "alertmanager", "oracle", "http://oracle:9093"),
    _svc("prefect-api", "prefect", "oracle", "http://oracle:4200"),
    _svc("vllm", "vllm", "starlord", "http://starlord:8000"),
    _svc("qdrant", "qdrant", "starlord", "http://starlord:6333"),
    _svc("searxng", "searxng", "thanos", "http://thanos:8080"),
    _svc("disk-root", "disk", "oracle", "/"),
    _svc("disk-root", "disk", "starlord", "/"),
    _svc("disk-root", "disk", "thanos", "/"),
    _svc("gpu", "gpu", "starlord", "local"),
    _svc("gpu", "gpu", "thanos", "local"),
)


def service_from_dict(raw: Mapping[str, Any]) -> Service:
    """One inventory entry, checked; unknown fields go to ``options``."""
    missing = [k for k in ("name", "kind", "node") if not raw.get(k)]
    if missing:
        raise ConfigError(f"inventory entry {dict(raw)!r} lacks {', '.join(missing)}")
    kind = str(raw["kind"])
    if kind not in KINDS:
        raise ConfigError(f"inventory entry {raw['name']!r}: unknown kind {kind!r} (known: {sorted(KINDS)})")
    target = raw.get("target") or raw.get("url") or raw.get("dsn") or raw.get("path")
    if not target:
        target = "local" if kind == "gpu" else ""
    if not target:
        raise ConfigError(f"inventory entry {raw['name']!r} needs a target (url, dsn or path)")
    timeout = raw.get("timeout_s")
    known = {"name", "kind", "node", "target", "url", "dsn", "path", "timeout_s", "options"}
    options = dict(raw.get("options") or {})
    options.update({k: v for k, v in raw.items() if k not in known})
    # An inventory is a run parameter or a file in the repository: secrets only by environment variable name.
    refuse_password(f"inventory entry {raw['name']!r}", str(target))
    if given := sorted(SECRET_OPTIONS & options.keys()):
        raise ConfigError(
            f"inventory entry {raw['name']!r}: give {given[0]}_env, the name of an environment variable that holds"
            f" the secret, instead of {given[0]} itself"
        )
    return Service(
        name=str(raw["name"]),
        kind=kind,
        node=str(raw["node"]),
        target=str(target),
        timeout_s=float(timeout) if timeout is not None else None,
        options=options,
    )


def load_inventory(source: str | Path | Iterable[Mapping[str, Any]] | None = None) -> list[Service]:
    """The inventory from a file path, a list of dicts, or the defaults when ``source`` is None."""
    if source is None:
        return list(DEFAULT_SERVICES)
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read inventory file {path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"inventory file {path} is not valid JSON/YAML: {exc}") from exc
        if isinstance(data, Mapping):
            data = data.get("services")
        if not isinstance(data, list):
            raise ConfigError(f"inventory file {path} must hold a list of services (or services: [...])")
        source = data
    services = [service_from_dict(item) for item in source]
    keys = [s.key for s in services]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ConfigError(f"inventory has duplicate services: {', '.join(duplicates)}")
    return services

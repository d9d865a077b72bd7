"""Which alerts a sweep should raise: pure state-change logic plus its small ledger table.

An event goes out only when a service *changes* state: "down" once it has failed ``down_after`` sweeps in a
row (so one lost packet does not page anyone), "recovered" once it answers again after a "down" was sent.
A service that keeps failing stays silent; "unknown" and "skipped" results leave the stored state alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from flows.common.db import Database, utc_now
from flows.common.events import SERVICE_DOWN, SERVICE_RECOVERED
from flows.ops.judges import DOWN, SKIPPED, UNKNOWN
from flows.ops.probes import HealthRow

MIGRATIONS = [
    "CREATE TABLE health_state ("
    " service_key TEXT PRIMARY KEY, status TEXT NOT NULL, down_streak INTEGER NOT NULL,"
    " alerted INTEGER NOT NULL, changed_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
]


@dataclass(frozen=True)
class ServiceState:
    status: str
    down_streak: int = 0
    alerted: bool = False  # a "down" event went out and no "recovered" since
    changed_at: str = ""


@dataclass(frozen=True)
class Transition:
    event: str
    row: HealthRow
    previous: str | None


def advance(
    previous: Mapping[str, ServiceState], rows: Sequence[HealthRow], now: str, down_after: int = 1
) -> tuple[dict[str, ServiceState], list[Transition]]:
    """The new state of every service and the events to emit for this sweep."""
    if down_after < 1:
        raise ValueError("down_after must be at least 1")
    state = dict(previous)
    events: list[Transition] = []
    for row in rows:
        if row.status in (UNKNOWN, SKIPPED):
            continue
        old = previous.get(row.key)
        cur = old or ServiceState(status=row.status, changed_at=now)
        if old is not None and old.status != row.status:
            cur = replace(cur, status=row.status, changed_at=now)
        if row.status == DOWN:
            cur = replace(cur, down_streak=cur.down_streak + 1 if old else 1)
            if not cur.alerted and cur.down_streak >= down_after:
                cur = replace(cur, alerted=True)
                events.append(Transition(SERVICE_DOWN, row, old.status if old else None))
        else:
            if cur.alerted:
                events.append(Transition(SERVICE_RECOVERED, row, old.status if old else None))
            cur = replace(cur, down_streak=0, alerted=False)
        state[row.key] = cur
    return state, events


def load_state(db: Database) -> dict[str, ServiceState]:
    db.ensure_schema("health", MIGRATIONS)
    with db.connect() as conn:
        rows = conn.execute("SELECT service_key, status, down_streak, alerted, changed_at FROM health_state").fetchall()
    return {k: ServiceState(s, int(n), bool(a), c) for k, s, n, a, c in rows}


def save_state(db: Database, state: Mapping[str, ServiceState]) -> None:
    now = utc_now()
    with db.connect() as conn:
        conn.executemany(
            "INSERT INTO health_state (service_key, status, down_streak, alerted, changed_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (service_key) DO UPDATE SET"
            " status = excluded.status, down_streak = excluded.down_streak, alerted = excluded.alerted,"
            " changed_at = excluded.changed_at, updated_at = excluded.updated_at",
            [(k, s.status, s.down_streak, int(s.alerted), s.changed_at, now) for k, s in state.items()],
        )


def load_state_file(path: Path) -> dict[str, ServiceState]:
    """The local mirror of the state, used when the ledger itself is unreachable; empty if unreadable."""
    try:
        raw = json.loads(path.read_text())
        return {k: ServiceState(**v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError):
        return {}


def save_state_file(path: Path, state: Mapping[str, ServiceState]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}))
    tmp.replace(path)

"""Benchmark: one health sweep of 15 healthy services (goal: well under 1 s).

12 local HTTP fakes (one per HTTP kind), the local PostgreSQL and Redis, and a disk probe. Prints each
service's latency from the last sweep and the min/median/max wall time over several sweeps.

Run from the repository root:  python bench/bench_health.py [--sweeps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.ops.inventory import Service
from flows.ops.probes import sweep, to_rows
from testkit.ops_services import fake_cluster

PG = os.environ.get("SWARM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=10)
    args = parser.parse_args()
    with fake_cluster() as urls:
        services = [Service(k, k, "oracle", u) for k, u in urls.items()]
        services += [
            Service("postgres", "postgres", "oracle", PG),
            Service("redis", "redis", "oracle", "redis://127.0.0.1:6379/0"),
            Service("disk-root", "disk", "oracle", "/"),
        ]
        walls = []
        for _ in range(args.sweeps):
            start = time.perf_counter()
            rows = to_rows(asyncio.run(sweep(services, 3.0)))
            walls.append(time.perf_counter() - start)
    print(f"{'service':<14} {'kind':<13} {'status':<9} {'ms':>7}  detail")
    for r in rows:
        print(f"{r.service:<14} {r.kind:<13} {r.status:<9} {r.latency_ms:>7.1f}  {r.detail[:50]}")
    print(
        f"\n{len(services)} services, {args.sweeps} sweeps: wall min {min(walls) * 1000:.0f} ms,"
        f" median {statistics.median(walls) * 1000:.0f} ms, max {max(walls) * 1000:.0f} ms"
        f" (goal < 1000 ms); all up: {all(r.status == 'up' for r in rows)}"
    )


if __name__ == "__main__":
    main()

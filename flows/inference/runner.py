"""The batch loop without Prefect: skip what is done, run chunks through an engine, write in order.

``python -m flows.inference.runner --input in.jsonl --output out.jsonl --base-url URL`` runs it over
HTTP from a shell (and from the tests, which kill it with SIGKILL and resume it).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flows.common.errors import SwarmError
from flows.inference.batch_io import (
    BatchRequest,
    InvalidLine,
    Item,
    OrderedEmitter,
    OutputWriter,
    error_output,
    invalid_output,
    ok_output,
    read_input,
    repair_output,
)
from flows.inference.engines import Engine, HttpEngine, HttpSettings, Outcome


@dataclass
class BatchStats:
    total: int = 0
    skipped: int = 0  # already in the output from an earlier run
    ok: int = 0
    failed: int = 0  # bad input lines and requests that ended in an error
    tokens: int = 0
    elapsed_s: float = 0.0
    error_codes: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.skipped + self.ok + self.failed

    @property
    def requests_per_s(self) -> float:
        return (self.ok + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "requests_per_s": self.requests_per_s, "tokens_per_s": self.tokens_per_s}

    def count_error(self, code: str) -> None:
        self.failed += 1
        self.error_codes[code] = self.error_codes.get(code, 0) + 1


def outcome_line(req: BatchRequest, o: Outcome) -> dict[str, object]:
    if o.ok:
        return ok_output(req.custom_id, o.body, o.status_code)
    return error_output(req.custom_id, req.line, o.error_code or "error", o.error_message or "", o.status_code, o.body)


def chunks(items: list[Item], size: int) -> list[list[Item]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_chunk(chunk: list[Item], engine: Engine, writer: OutputWriter, stats: BatchStats) -> None:
    """Bad lines get their error line at once; the rest go through the engine in one call."""
    emitter = OrderedEmitter(writer, len(chunk))
    sendable: list[tuple[int, BatchRequest]] = []
    for pos, item in enumerate(chunk):
        if isinstance(item, InvalidLine):
            emitter.put(pos, invalid_output(item))
            stats.count_error(item.code)
        else:
            sendable.append((pos, item))

    def on_result(k: int, o: Outcome) -> None:
        pos, req = sendable[k]
        emitter.put(pos, outcome_line(req, o))
        if o.ok:
            stats.ok += 1
            stats.tokens += o.tokens
        else:
            stats.count_error(o.error_code or "error")

    if sendable:
        engine.run([r for _, r in sendable], on_result)
    if not emitter.complete:
        raise SwarmError(f"engine {engine.name} returned fewer results than requests in a chunk")


def run_batch(
    input_path: Path,
    output_path: Path,
    engine: Engine,
    chunk_size: int = 256,
    on_progress: Callable[[BatchStats], None] | None = None,
    items: list[Item] | None = None,
) -> BatchStats:
    """Run every input line not yet in the output; safe to re-run after any crash."""
    t0 = time.monotonic()
    items = read_input(input_path) if items is None else items
    done = repair_output(output_path, items)
    todo = [i for i in items if not done.contains(i)]
    stats = BatchStats(total=len(items), skipped=len(items) - len(todo))
    with OutputWriter(output_path) as writer:
        for chunk in chunks(todo, max(1, chunk_size)):
            run_chunk(chunk, engine, writer, stats)
            stats.elapsed_s = time.monotonic() - t0
            if on_progress is not None:
                on_progress(stats)
    stats.elapsed_s = time.monotonic() - t0
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run an OpenAI Batch JSONL file against an OpenAI-compatible server.")
    p.add_argument("--input", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--base-url", required=True)
    p.add_argument("--model")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    engine = HttpEngine(
        HttpSettings(args.base_url, model=args.model, concurrency=args.concurrency, timeout_s=args.timeout)
    )
    try:
        stats = run_batch(args.input, args.output, engine, chunk_size=args.chunk_size)
    except SwarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok={stats.ok} failed={stats.failed} skipped={stats.skipped} tokens={stats.tokens}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

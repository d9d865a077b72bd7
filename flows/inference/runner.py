"""The batch loop without Prefect: skip what is done, run chunks through an engine, write in order.

With ``retry_failed`` the lines whose last answer was an error are sent again first: their answers go to a
side file that then replaces those lines in one atomic rename (input order and one line per custom_id kept).

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
    merge_retried,
    ok_output,
    read_input,
    repair_output,
    retry_path,
)
from flows.inference.engines import Engine, HttpEngine, HttpSettings, Outcome
from flows.inference.usage import ModelUsage, add_usage


@dataclass
class BatchStats:
    total: int = 0
    skipped: int = 0  # already in the output from an earlier run, not sent again
    retried: int = 0  # failed in an earlier run, sent again (counted in ok/failed too)
    ok: int = 0
    failed: int = 0  # bad input lines and requests that ended in an error
    tokens: int = 0
    elapsed_s: float = 0.0
    error_codes: dict[str, int] = field(default_factory=dict)
    usage: dict[str, ModelUsage] = field(default_factory=dict)  # per model, of the successful responses

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
            add_usage(stats.usage, o.usage)
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
    retry_failed: bool = False,
) -> BatchStats:
    """Run every input line not yet in the output (and, with ``retry_failed``, every request whose line there
    is an error); safe to re-run after any crash."""
    t0 = time.monotonic()
    items = read_input(input_path) if items is None else items
    if retry_path(output_path).exists():  # a retry pass a crash cut short: keep what it got
        merge_retried(output_path, items)
    done = repair_output(output_path, items)
    retry = [i for i in items if isinstance(i, BatchRequest) and i.custom_id in done.failed_ids] if retry_failed else []
    todo = [i for i in items if not done.contains(i)]
    stats = BatchStats(total=len(items), skipped=len(items) - len(todo) - len(retry), retried=len(retry))

    def run_all(work: list[Item], target: Path) -> None:
        with OutputWriter(target) as writer:
            for chunk in chunks(work, max(1, chunk_size)):
                run_chunk(chunk, engine, writer, stats)
                stats.elapsed_s = time.monotonic() - t0
                if on_progress is not None:
                    on_progress(stats)

    if retry:
        run_all(retry, retry_path(output_path))
        merge_retried(output_path, items)
    run_all(todo, output_path)
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
    p.add_argument("--retry-failed", action="store_true", help="send the lines whose answer was an error again")
    args = p.parse_args(argv)
    engine = HttpEngine(
        HttpSettings(args.base_url, model=args.model, concurrency=args.concurrency, timeout_s=args.timeout)
    )
    try:
        stats = run_batch(args.input, args.output, engine, chunk_size=args.chunk_size, retry_failed=args.retry_failed)
    except SwarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok={stats.ok} failed={stats.failed} skipped={stats.skipped} retried={stats.retried} tokens={stats.tokens}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

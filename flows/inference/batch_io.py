"""OpenAI Batch JSONL in, vLLM ``run-batch`` JSONL out: parsing, validation, output lines and resume.

Input line: ``{"custom_id": str, "method": "POST", "url": "/v1/...", "body": {...}}``.
Output line (vLLM's ``BatchRequestOutput``): ``{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error"}``. Errors carry an object ``{"code", "message", "line"}`` (the shape of
OpenAI's batch errors) so that lines without a usable ``custom_id`` can still be recognised on resume.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.common.errors import ConfigError

SUPPORTED_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass(frozen=True)
class BatchRequest:
    """One valid input line."""

    line: int  # 1-based line number in the input file
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class InvalidLine:
    """An input line that gets an error line in the output instead of a request."""

    line: int
    custom_id: str | None
    code: str
    message: str


Item = BatchRequest | InvalidLine


def parse_line(line_no: int, text: str) -> Item:
    """Validate one input line; never raises for bad content."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return InvalidLine(line_no, None, "invalid_json", f"line {line_no}: not valid JSON ({exc.msg})")
    if not isinstance(obj, dict):
        return InvalidLine(line_no, None, "invalid_request", f"line {line_no}: expected a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return InvalidLine(line_no, None, "missing_custom_id", f"line {line_no}: missing custom_id")
    method = obj.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        return InvalidLine(
            line_no,
            custom_id,
            "unsupported_method",
            f"line {line_no}: only POST is supported, got {method!r}",
        )
    url = obj.get("url")
    if url not in SUPPORTED_URLS:
        return InvalidLine(
            line_no,
            custom_id,
            "unsupported_url",
            f"line {line_no}: url {url!r} is not supported (use one of {', '.join(SUPPORTED_URLS)})",
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return InvalidLine(line_no, custom_id, "invalid_body", f"line {line_no}: body must be a JSON object")
    return BatchRequest(line_no, custom_id, url, body)


def parse_lines(lines: Iterable[str]) -> list[Item]:
    """Every non-blank line, in order; blank lines are ignored (they are not requests)."""
    items: list[Item] = []
    for n, raw in enumerate(lines, start=1):
        if raw.strip():
            items.append(parse_line(n, raw))
    return items


def duplicate_ids(items: Iterable[Item]) -> list[str]:
    counts = Counter(i.custom_id for i in items if i.custom_id is not None)
    return sorted(cid for cid, n in counts.items() if n > 1)


def read_input(path: Path) -> list[Item]:
    """Parse the whole input; a duplicate custom_id refuses the run before anything is sent."""
    if path.exists() and not path.is_file():  # a FIFO or device would block or never end
        raise ConfigError(f"batch input {path} is not a regular file")
    try:
        # utf-8-sig: a BOM that an editor put in front of line 1 must not make it "invalid JSON".
        with path.open(encoding="utf-8-sig", errors="replace") as fh:
            items = parse_lines(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"batch input {path} does not exist") from exc
    dups = duplicate_ids(items)
    if dups:
        shown = ", ".join(dups[:10]) + (f" and {len(dups) - 10} more" if len(dups) > 10 else "")
        raise ConfigError(f"batch input {path} has duplicate custom_id values: {shown}; nothing was run")
    return items


ID_PREFIX = "vllm-"
# How every line OutputWriter writes begins (the "id" key comes first): a torn last line is a prefix of it.
LINE_START = b'{"id":"' + ID_PREFIX.encode()
OUTPUT_KEYS = frozenset({"id", "custom_id", "response", "error"})


def _new_ids() -> tuple[str, str]:
    return f"{ID_PREFIX}{uuid.uuid4().hex}", f"{ID_PREFIX}batch-{uuid.uuid4().hex}"


def ok_output(custom_id: str, body: Any, status_code: int = 200) -> dict[str, Any]:
    out_id, req_id = _new_ids()
    return {
        "id": out_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": req_id, "body": body},
        "error": None,
    }


def error_output(
    custom_id: str | None,
    line: int,
    code: str,
    message: str,
    status_code: int = 400,
    body: Any = None,
) -> dict[str, Any]:
    out_id, req_id = _new_ids()
    return {
        "id": out_id,
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": req_id, "body": body},
        "error": {"code": code, "message": message, "line": line},
    }


def invalid_output(item: InvalidLine) -> dict[str, Any]:
    return error_output(item.custom_id, item.line, item.code, item.message)


@dataclass
class DoneSet:
    """What an earlier run already wrote: custom_ids, and line numbers of id-less error lines."""

    custom_ids: set[str] = field(default_factory=set)
    lines_without_id: set[int] = field(default_factory=set)
    failed_ids: set[str] = field(default_factory=set)  # custom_ids whose line is an error

    def contains(self, item: Item) -> bool:
        if item.custom_id is not None:
            return item.custom_id in self.custom_ids
        return item.line in self.lines_without_id

    def foreign(self, items: Iterable[Item]) -> str | None:
        """An entry that no line of ``items`` explains (the output of another batch), or None."""
        ids = {i.custom_id for i in items if i.custom_id is not None}
        lines = {i.line for i in items if i.custom_id is None}
        if strangers := sorted(self.custom_ids - ids):
            return f"custom_id {strangers[0]!r}"
        if strangers_lines := sorted(self.lines_without_id - lines):
            return f"an error line for input line {strangers_lines[0]}"
        return None

    def __len__(self) -> int:
        return len(self.custom_ids) + len(self.lines_without_id)


def not_an_output(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"batch output {path} exists and {why}: it is not this batch's output, so it is left as it is"
        " (move it, or choose another output_path)"
    )


def repair_output(path: Path, items: Sequence[Item]) -> DoneSet:
    """Truncate a torn last line (a run killed mid-write) and return what of ``items`` is already done.

    Only the tail can be torn because lines are appended and fsynced one by one. Anything else (a line
    that is not an output line, a torn tail that is no prefix of one, an entry for no line of ``items``,
    not a regular file) is refused with the file untouched: no run of this batch wrote it.
    """
    done = DoneSet()
    if not path.exists():
        return done
    if not path.is_file():
        raise not_an_output(path, "is not a regular file")
    good_end = 0
    with path.open("rb") as fh:  # streamed: outputs with embeddings can be many GB
        for n, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):  # no newline: the line in flight when the run died
                if not raw.startswith(LINE_START[: len(raw)]):
                    raise not_an_output(path, f"its last line {n} is no output line")
                break
            obj = _output_line(raw)
            if obj is None:
                raise not_an_output(path, f"line {n} is no output line")
            _remember(done, obj)
            good_end += len(raw)
    if stranger := done.foreign(items):
        raise not_an_output(path, f"holds {stranger}, which is in no line of this input")
    if good_end < path.stat().st_size:
        with path.open("rb+") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return done


def _output_line(raw: bytes) -> dict[str, Any] | None:
    """The output line ``raw`` holds (vLLM's BatchRequestOutput shape), or None."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) and obj.keys() >= OUTPUT_KEYS else None


def _remember(done: DoneSet, obj: dict[str, Any]) -> None:
    cid = obj.get("custom_id")
    err = obj.get("error")
    if isinstance(cid, str):
        done.custom_ids.add(cid)
        if err is not None:
            done.failed_ids.add(cid)
        return
    if isinstance(err, dict) and isinstance(err.get("line"), int):
        done.lines_without_id.add(err["line"])


def retry_path(output: Path) -> Path:
    """Where a retry pass appends its answers before they replace the failed lines of ``output``."""
    return output.with_name(output.name + ".retry")


def merge_retried(output: Path, items: Sequence[Item]) -> int:
    """Put the answers of a retry pass in place of their custom_ids' lines of ``output``; returns how many.

    ``output`` is rewritten into a temporary file and renamed over it, so a crash leaves either the old or
    the new file; the retry file goes only after the rename, and merging it twice gives the same file.
    """
    side = retry_path(output)
    repair_output(side, items)  # a retry pass killed mid-write leaves a torn last line too
    answers: dict[str, bytes] = {}
    with side.open("rb") as fh:
        for raw in fh:
            obj = _output_line(raw)
            if obj is not None and isinstance(obj.get("custom_id"), str):
                answers[obj["custom_id"]] = raw
    repair_output(output, items)
    tmp = output.with_name(output.name + ".merging")
    replaced = 0
    with output.open("rb") as src, tmp.open("wb") as dst:
        for raw in src:
            obj = _output_line(raw)
            cid = obj.get("custom_id") if obj else None
            if isinstance(cid, str) and cid in answers:
                raw = answers[cid]
                replaced += 1
            dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, output)
    _fsync_dir(output.parent)
    side.unlink()
    return replaced


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OutputWriter:
    """Append-only JSONL with flush + fsync per line: a SIGKILL loses at most the line being written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def write(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> OutputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrderedEmitter:
    """Results arrive in any order under concurrency; lines leave in input order.

    Slot ``i`` is written only once slots ``0..i-1`` are, so the output is always a prefix of the input
    order and a resumed run appends after it, keeping the whole file in input order.
    """

    def __init__(self, writer: OutputWriter, count: int) -> None:
        self._writer = writer
        self._pending: dict[int, dict[str, Any]] = {}
        self._next = 0
        self._count = count

    def put(self, index: int, obj: dict[str, Any]) -> None:
        self._pending[index] = obj
        while self._next in self._pending:
            self._writer.write(self._pending.pop(self._next))
            self._next += 1

    @property
    def written(self) -> int:
        return self._next

    @property
    def complete(self) -> bool:
        return self._next >= self._count

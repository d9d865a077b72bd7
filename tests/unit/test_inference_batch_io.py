"""Input validation, output format, torn-line repair and ordering of the batch-inference files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flows.common.errors import ConfigError
from flows.inference.batch_io import (
    BatchRequest,
    InvalidLine,
    OrderedEmitter,
    OutputWriter,
    error_output,
    merge_retried,
    ok_output,
    parse_lines,
    read_input,
    repair_output,
    retry_path,
)


def _line(cid: str | None = "a", url: str = "/v1/chat/completions", **extra: object) -> str:
    obj: dict[str, object] = {"method": "POST", "url": url, "body": {"messages": []}, **extra}
    if cid is not None:
        obj["custom_id"] = cid
    return json.dumps(obj)


def test_each_bad_line_is_reported_with_its_line_number_and_the_rest_parse() -> None:
    lines = [
        _line("ok-1"),
        "{not json",
        _line(None),
        _line("bad-url", url="/v1/images/generations"),
        _line("get", method="GET"),
        json.dumps({"custom_id": "nobody", "method": "POST", "url": "/v1/embeddings", "body": "x"}),
        "",
        _line("ok-2", url="/v1/embeddings"),
    ]
    items = parse_lines(lines)
    assert [type(i).__name__ for i in items] == ["BatchRequest"] + ["InvalidLine"] * 5 + ["BatchRequest"]
    bad = [i for i in items if isinstance(i, InvalidLine)]
    assert [(b.line, b.custom_id, b.code) for b in bad] == [
        (2, None, "invalid_json"),
        (3, None, "missing_custom_id"),
        (4, "bad-url", "unsupported_url"),
        (5, "get", "unsupported_method"),
        (6, "nobody", "invalid_body"),
    ]
    assert all(b.message.startswith(f"line {b.line}:") for b in bad)
    assert isinstance(items[-1], BatchRequest) and items[-1].line == 8


def test_duplicate_custom_ids_refuse_the_whole_run_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([_line("a"), _line("b"), _line("a"), _line("c"), _line("b")]) + "\n")
    with pytest.raises(ConfigError, match=r"duplicate custom_id values: a, b;"):
        read_input(path)


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_input(tmp_path / "nope.jsonl")


def test_output_lines_have_vllm_run_batch_fields() -> None:
    ok = ok_output("x", {"choices": []})
    assert set(ok) == {"id", "custom_id", "response", "error"}
    assert set(ok["response"]) == {"status_code", "request_id", "body"}
    assert ok["id"].startswith("vllm-") and ok["response"]["request_id"].startswith("vllm-batch-")
    assert ok["error"] is None and ok["response"]["status_code"] == 200
    err = error_output(None, 7, "invalid_json", "line 7: not valid JSON")
    assert err["response"]["status_code"] == 400 and err["response"]["body"] is None
    assert err["error"] == {"code": "invalid_json", "message": "line 7: not valid JSON", "line": 7}


def test_repair_truncates_a_torn_last_line_and_lists_what_is_done(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputWriter(out) as w:
        w.write(ok_output("a", {}))
        w.write(error_output(None, 2, "invalid_json", "line 2: bad"))
        w.write(ok_output("c", {}))
    intact = out.read_bytes()
    with out.open("ab") as fh:
        fh.write(b'{"id":"vllm-1","custom_id":"d","resp')
    items = parse_lines([_line("a"), "{bad", _line("c"), _line("d")])
    done = repair_output(out, items)
    assert out.read_bytes() == intact
    assert done.custom_ids == {"a", "c"} and done.lines_without_id == {2}
    assert done.contains(InvalidLine(2, None, "invalid_json", "")) and not done.contains(
        InvalidLine(3, None, "invalid_json", "")
    )


def test_repair_of_a_missing_output_is_empty(tmp_path: Path) -> None:
    assert len(repair_output(tmp_path / "none.jsonl", [])) == 0


def test_ordered_emitter_writes_in_input_order_whatever_the_completion_order(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputWriter(out) as w:
        em = OrderedEmitter(w, 4)
        em.put(2, {"custom_id": "c"})
        em.put(1, {"custom_id": "b"})
        assert out.read_text() == ""  # nothing may be written before slot 0
        em.put(0, {"custom_id": "a"})
        assert em.written == 3 and not em.complete
        em.put(3, {"custom_id": "d"})
        assert em.complete
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == ["a", "b", "c", "d"]


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (_line("a") + "\r\n" + _line("b") + "\r\n").encode())
    assert [i.custom_id for i in read_input(path) if isinstance(i, BatchRequest)] == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"precious notes\nthat are no batch output\n", "line 1 is no output line"),
        (b"no newline at all", "its last line 1 is no output line"),
        (json.dumps(ok_output("a", {})).encode() + b"\ngarbage\n" + json.dumps(ok_output("c", {})).encode() + b"\n",
         "line 2 is no output line"),
        (json.dumps({"custom_id": "a", "note": "not an output"}).encode() + b"\n", "line 1 is no output line"),
        (json.dumps(ok_output("someone-else", {})).encode() + b"\n", "holds custom_id 'someone-else'"),
        (json.dumps(error_output(None, 9, "invalid_json", "")).encode() + b"\n",
         "holds an error line for input line 9"),
    ],
)  # fmt: skip
def test_an_output_no_run_of_this_batch_wrote_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes, why: str
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    with pytest.raises(ConfigError, match=f"exists and {why}.*left as it is"):
        repair_output(out, parse_lines([_line("a"), _line("c")]))
    assert out.read_bytes() == content


def test_inputs_and_outputs_that_are_no_regular_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_input(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        repair_output(fifo, [])
    with pytest.raises(ConfigError, match="is not a regular file"):
        repair_output(tmp_path, [])


def test_merging_a_retry_replaces_only_its_lines_in_place_and_merging_it_again_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    items = parse_lines([_line("a"), _line("b"), _line("c")])
    with OutputWriter(out) as w:
        for obj in (ok_output("a", {"n": 1}), error_output("b", 2, "http_error", "HTTP 500"), ok_output("c", {"n": 3})):
            w.write(obj)
    assert repair_output(out, items).failed_ids == {"b"}
    answer = json.dumps(ok_output("b", {"n": 2})).encode() + b"\n"
    retry_path(out).write_bytes(answer + b'{"id":"vllm-torn","custom_')  # the pass was killed mid-write
    before = out.read_bytes().splitlines(keepends=True)
    assert merge_retried(out, items) == 1
    after = out.read_bytes().splitlines(keepends=True)
    assert after == [before[0], answer, before[2]] and not retry_path(out).exists()
    retry_path(out).write_bytes(answer)  # a crash after the rename, before the retry file was removed
    assert merge_retried(out, items) == 1 and out.read_bytes().splitlines(keepends=True) == after
    assert repair_output(out, items).failed_ids == set()

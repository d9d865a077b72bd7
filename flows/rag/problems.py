"""Why a file cannot be indexed, as one line: shared by the parser and the converters it runs."""

from __future__ import annotations


class ParseProblem(Exception):
    """The file cannot be indexed; ``status`` is skipped or failed, ``reason`` one line for the ledger."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."

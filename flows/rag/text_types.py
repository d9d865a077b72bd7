"""unstructured's text-type test, made cheap where its answer cannot change a chunk: one seam for every format.

Each partitioner asks unstructured's ``is_possible_narrative_text`` about every text its markup does not type: HTML
(and so Markdown), docx, pptx, xlsx, plain text, and the PDF text boxes of flows/rag/pdf_text.py (through
``element_from_text``). The test runs the spaCy pipeline (sentences, POS tags) and was two thirds to nine tenths of
those formats' parse (bench/bench_parse_formats.py profiles it). Its answer only tells NarrativeText from Text,
which by_title chunking treats alike; it reaches a chunk only where a text it rejects may be a Title next
(``is_possible_title``, asked by pptx, xlsx, plain text and PDF), and no text over the title word limit can be one. So
such a text skips the spaCy tests and is NarrativeText unless unstructured's cheap test (too few letters) says
otherwise; a shorter one gets unstructured's own test. The PDF path knows its short texts ahead and has spaCy make
their Docs in one batch (prepare_docs), which unstructured's pipeline runner then finds ready.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_TEST = "is_possible_narrative_text"
_installed = False


def title_max_words() -> int:
    return int(os.environ.get("UNSTRUCTURED_TITLE_MAX_WORD_LENGTH", "12"))  # is_possible_title's own setting


def too_long_for_title(text: str) -> bool:
    """What ``is_possible_title`` rejects by length, counted as it counts (split on single spaces)."""
    return len(text.split(" ")) > title_max_words()


def skipping_spacy(test: Callable[..., bool]) -> Callable[..., bool]:
    """unstructured's narrative ``test``, answering a text too long to be a title without spaCy."""
    from unstructured.partition.text_type import under_non_alpha_ratio

    @functools.wraps(test)
    def is_possible_narrative_text(text: str, *args: Any, **kwargs: Any) -> bool:
        if not too_long_for_title(text):
            return test(text, *args, **kwargs)
        threshold = float(os.environ.get("UNSTRUCTURED_NARRATIVE_TEXT_NON_ALPHA_THRESHOLD", "0.5"))
        return not under_non_alpha_ratio(text, threshold=threshold)

    return is_possible_narrative_text


def _rebind(old: Callable[..., bool], new: Callable[..., bool]) -> None:
    """Point every loaded unstructured module's name for the narrative test from ``old`` to ``new``: its partitioners
    import it by name, so replacing it where it is defined reaches only the modules loaded later."""
    for name, module in list(sys.modules.items()):
        if (name == "unstructured" or name.startswith("unstructured.")) and vars(module).get(_TEST) is old:
            setattr(module, _TEST, new)


def install() -> None:
    """Idempotent: every partitioner asks skipping_spacy's test, and unstructured's spaCy runner (``_run_pipeline``)
    answers from prepare_docs' batch first. These two names are where this project hooks into unstructured's text
    types; tests/flows/test_parse.py pins what they do."""
    global _installed
    if _installed:
        return
    import unstructured.nlp.tokenize as tokenize
    import unstructured.partition.text_type as text_type

    test = getattr(text_type, _TEST, None)
    if test is None or not all(hasattr(tokenize, name) for name in ("_run_pipeline", "_get_nlp")):
        raise RuntimeError("unstructured changed its text-type test; update flows/rag/text_types.py")
    _rebind(test, skipping_spacy(test))
    tokenize._run_pipeline = with_prepared_docs(tokenize._run_pipeline)  # type: ignore[attr-defined]
    _installed = True


@contextlib.contextmanager
def spacy_on_every_text() -> Iterator[None]:
    """unstructured's own narrative test for every text while inside: the baseline the benchmark and the tests
    compare chunks with."""
    import unstructured.partition.text_type as text_type

    ours = getattr(text_type, _TEST)
    theirs = ours.__wrapped__
    _rebind(ours, theirs)
    try:
        yield
    finally:
        _rebind(theirs, ours)


# Docs spaCy made in one batch for the texts unstructured's heuristics are about to ask about (prepare_docs).
_prepared: dict[str, Any] = {}


def prepare_docs(texts: Iterable[str]) -> None:
    """Run unstructured's spaCy pipeline over ``texts`` in one batch: on short texts (titles, table-of-contents lines)
    the per-call cost is most of the work, and ``nlp.pipe`` is ~7x faster than one call each, with the same tags and
    sentences. unstructured's own pipeline runner then finds each Doc ready (with_prepared_docs)."""
    import unstructured.nlp.tokenize as tokenize

    _prepared.clear()
    todo = list(dict.fromkeys(texts))
    _prepared.update(zip(todo, tokenize._get_nlp().pipe(todo), strict=True))


def with_prepared_docs(run_pipeline: Callable[[str], Any]) -> Callable[[str], Any]:
    """unstructured's ``_run_pipeline``, answering from the Docs prepare_docs made first."""

    def run(text: str) -> Any:
        doc = _prepared.pop(text, None)
        return run_pipeline(text) if doc is None else doc

    return run

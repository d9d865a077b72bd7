#!/usr/bin/env python3
"""Build a retrieval query set (``swarm eval``, rag-eval) from Python's own library reference.

The documents are Debian's python3.11-doc HTML (``/usr/share/doc/python3.11/html``), which nobody here wrote;
run as root where the folder is absent, this script installs the package with apt-get.

How queries are derived: every ``library/*.html`` page's h2 and h3 section headings (the text of the heading,
without Sphinx's "¶" link) are candidate queries, each relevant to the one page it comes from. Dropped: headings of
one word ("Examples", "Functions"), and headings found on more than one page of the whole library ("Module
contents", "Exceptions", the sidebar's "Navigation"), since nothing tells which of those pages a reader meant.
``--pages`` picks that many pages at random (``--seed``); ``--count`` queries are drawn from their headings, one
per page in turn (pages in random order) until the count is reached; ``--copy-to`` copies the picked pages (as
``library/<page>``) into a folder to ingest, so that the store holds exactly the pages the queries come from.

Why that is a fair test: the queries and their answers come from the documents' authors, not from whoever tunes
the search, and the relevant page is known by construction, not judged after seeing the results. A section
heading is what a reader types when looking for that section: a short, specific phrase ("File Descriptor
Operations", os.html). Its limits, to read the numbers by: each heading's words occur in its own page, which
favours a text match (hybrid) over the dense search; and another page may answer a heading too, so recall here is
a lower bound.

    python scripts/build_eval_set.py --pages 100 --count 200 --seed 1 --copy-to /tmp/pydoc --out queries.jsonl
    swarm ingest /tmp/pydoc && swarm eval queries.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

DOCS = Path("/usr/share/doc/python3.11/html")
PACKAGE = "python3.11-doc"
HEADINGS = {"h2", "h3"}


class _Headings(HTMLParser):
    """The text of a page's h2/h3 elements, without the links Sphinx appends to them (the pilcrow)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._text: list[str] | None = None
        self._skip = 0  # depth inside a headerlink anchor

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in HEADINGS:
            self._text = []
        elif self._text is not None and tag == "a" and "headerlink" in (dict(attrs).get("class") or ""):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._skip:
            self._skip -= 1
        elif tag in HEADINGS and self._text is not None:
            self.found.append(" ".join("".join(self._text).split()))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None and not self._skip:
            self._text.append(data)


def headings(html: str) -> list[str]:
    parser = _Headings()
    parser.feed(html)
    return [text for text in parser.found if text]


def specific_headings(pages: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per page, its headings of two words or more that no other page has (compared case-insensitively)."""
    spread = Counter(text.casefold() for texts in pages.values() for text in set(texts))
    return {
        page: sorted({text for text in texts if len(text.split()) > 1 and spread[text.casefold()] == 1})
        for page, texts in pages.items()
    }


def draw(candidates: dict[str, list[str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    """``count`` (page, heading) pairs: one heading of each page, pages in random order, before any page's second,
    so that pages with many sections (typing.html has dozens) do not make most of the set."""
    decks = [[(page, text) for text in rng.sample(texts, len(texts))] for page, texts in candidates.items() if texts]
    rng.shuffle(decks)
    rounds = itertools.zip_longest(*decks)
    return [pair for pairs in rounds for pair in pairs if pair is not None][:count]


def ensure_docs(docs: Path) -> None:
    """Install Debian's package when its folder is absent and this runs as root; else say how."""
    if (docs / "library").is_dir():
        return
    if docs != DOCS or os.geteuid() != 0:
        sys.exit(f"error: no {docs / 'library'}; install it with `apt-get install -y {PACKAGE}` (as root)")
    subprocess.run(
        ["apt-get", "install", "-y", PACKAGE], check=True, env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS, help=f"the HTML documentation folder (default {DOCS})")
    parser.add_argument("--pages", type=int, help="pick this many library pages at random (default: all)")
    parser.add_argument("--count", type=int, default=200, help="queries to draw (default 200; fewer if fewer exist)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both random draws (default 0)")
    parser.add_argument("--copy-to", type=Path, help="copy the picked pages here, as library/<page>, to ingest")
    parser.add_argument("--out", type=Path, required=True, help="the JSON Lines query set to write")
    args = parser.parse_args(argv)
    ensure_docs(args.docs)

    rng = random.Random(args.seed)
    files = sorted((args.docs / "library").glob("*.html"))
    # Generic headings are judged over the whole library, not only the picked pages.
    candidates = specific_headings({f.name: headings(f.read_text(encoding="utf-8")) for f in files})
    picked = sorted(rng.sample(files, min(args.pages, len(files)))) if args.pages else files
    chosen = draw({f"library/{f.name}": candidates[f.name] for f in picked}, args.count, rng)

    args.out.write_text("".join(json.dumps({"query": q, "relevant": [page]}) + "\n" for page, q in chosen))
    if args.copy_to:
        (args.copy_to / "library").mkdir(parents=True, exist_ok=True)
        for f in picked:
            shutil.copy2(f, args.copy_to / "library" / f.name)
    print(f"{len(chosen)} queries from {len({page for page, _ in chosen})} of {len(picked)} pages -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Real corpora nobody here wrote, from Debian packages, installed on demand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PYTHON_DOC_LIBRARY = Path("/usr/share/doc/python3.11/html/library")
POSTGRES_DOC = Path("/usr/share/doc/postgresql-doc-15/html")
TEXLIVE_PDF_DOC = Path("/usr/share/doc/texlive-doc/latex/base")

# corpus name -> (Debian package, folder of its documents)
CORPORA = {
    "python-doc": ("python3.11-doc", PYTHON_DOC_LIBRARY),  # ~317 library reference pages
    "postgres-doc": ("postgresql-doc-15", POSTGRES_DOC),  # ~1,170 manual pages
    "texlive-pdf": ("texlive-latex-base-doc", TEXLIVE_PDF_DOC),  # LaTeX's base manuals, as PDF
}


def ensure_corpus(name: str) -> Path:
    package, folder = CORPORA[name]
    if not folder.is_dir():
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
    return folder


def sample_pages(target: Path, count: int, corpus: str = "python-doc") -> list[Path]:
    """The first ``count`` pages of ``corpus`` (sorted by name), copied into ``target``."""
    pages = sorted(ensure_corpus(corpus).glob("*.html"))[:count]
    if len(pages) < count:
        raise SystemExit(f"{corpus} has only {len(pages)} pages, {count} were asked for")
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(page, target / page.name)) for page in pages]


def sample_python_doc(target: Path, count: int) -> list[Path]:
    return sample_pages(target, count, "python-doc")

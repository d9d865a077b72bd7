"""Real corpora nobody here wrote, from Debian packages, installed on demand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PYTHON_DOC_LIBRARY = Path("/usr/share/doc/python3.11/html/library")


def ensure_python_doc() -> Path:
    """Debian's python3.11-doc: ~530 HTML pages of the standard library reference."""
    if not PYTHON_DOC_LIBRARY.is_dir():
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "python3.11-doc"], check=True)
    return PYTHON_DOC_LIBRARY


def sample_python_doc(target: Path, count: int) -> list[Path]:
    """The first ``count`` library pages (sorted by name), copied into ``target``."""
    pages = sorted(ensure_python_doc().glob("*.html"))[:count]
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(page, target / page.name)) for page in pages]

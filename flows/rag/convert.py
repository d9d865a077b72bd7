"""The Debian tools parsing runs as child processes: LibreOffice (legacy Office and OpenDocument to OOXML) and
pandoc (OpenDocument text, RTF and EPUB to HTML), plus the one way every tool is started (``run_tool``).

Each tool runs in its own process group under the parse's own deadline: the time left on the parser process's
timer (parser_pool.run_with_deadline), so a hung conversion is killed with its children, never left behind.
Children inherit the parser process's address-space limit, which bounds their memory too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from flows.rag.ledger import FAILED
from flows.rag.problems import ParseProblem

# Without a parse deadline (a direct call), a tool still gets a bound of its own.
DEFAULT_TOOL_TIMEOUT_S = 300.0
_PACKAGES = {
    "soffice": "libreoffice-core",
    "pandoc": "pandoc",
    "pdftoppm": "poppler-utils",
    "tesseract": "tesseract-ocr",
}
# LibreOffice's converter to the OOXML sibling unstructured's fast partitioners read.
OFFICE_TARGETS = {".doc": "docx", ".ppt": "pptx", ".odp": "pptx", ".xls": "xlsx", ".ods": "xlsx"}
PANDOC_READERS = {".odt": "odt", ".rtf": "rtf", ".epub": "epub"}


def missing_tool_reason(tool: str) -> str:
    return f"{tool} is not installed (Debian package {_PACKAGES.get(tool, tool)})"


def time_left() -> float:
    """Seconds left on this process's parse deadline (SIGALRM timer), else the tool's own bound."""
    remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    return remaining if remaining > 0 else DEFAULT_TOOL_TIMEOUT_S


def run_tool(args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a tool to completion within the time left; the one place a parser starts a child process."""
    if shutil.which(args[0]) is None:
        raise ParseProblem(FAILED, missing_tool_reason(args[0]))
    timeout = time_left()
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group: killing it takes the tool's children (soffice.bin) too
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ParseProblem(FAILED, f"{args[0]} took over {timeout:.0f} s") from None
    finally:  # also when the parse deadline's exception lands in communicate()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def stderr_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """A tool's complaint as one short line for the ledger."""
    return " ".join(result.stderr.decode(errors="replace").split())[:160]


_profile: Path | None = None


def _libreoffice_profile() -> Path:
    """One LibreOffice user profile per parser process: parallel conversions never share (or lock) one.
    Kept for the process's life, so only its first conversion pays for creating it."""
    global _profile
    if _profile is None:
        _profile = Path(tempfile.mkdtemp(prefix="swarm-libreoffice-"))
        atexit.register(shutil.rmtree, _profile, True)
    return _profile


def libreoffice_convert(path: str, extension: str, work: Path) -> Path:
    """Convert ``path`` (a file of type ``extension``) to its OOXML sibling in ``work``. A parser process runs
    one file at a time, so it runs one conversion at a time."""
    target = OFFICE_TARGETS[extension]
    source = work / f"source{extension}"  # LibreOffice names its output after the input
    os.symlink(os.path.abspath(path), source)
    out_dir = work / "converted"
    result = run_tool(
        [
            "soffice",
            f"-env:UserInstallation={_libreoffice_profile().as_uri()}",
            "--headless",
            "--norestore",
            "--nolockcheck",
            "--convert-to",
            target,
            "--outdir",
            str(out_dir),
            str(source),
        ]
    )
    converted = out_dir / f"source.{target}"
    if not converted.exists() or converted.stat().st_size == 0:
        detail = stderr_line(result)
        why = f"LibreOffice cannot read this {extension} (corrupt or password protected)"
        raise ParseProblem(FAILED, f"{why}: {detail}" if detail else why)
    return converted


def pandoc_to_html(path: str, extension: str, work: Path) -> Path:
    """Convert ``path`` to one standalone HTML file in ``work``; images are left out (nothing reads them)."""
    target = work / "converted.html"
    result = run_tool(["pandoc", "--from", PANDOC_READERS[extension], "--to", "html5", "--standalone",
                       "--output", str(target), path])  # fmt: skip
    if result.returncode != 0 or not target.exists():
        detail = stderr_line(result)
        raise ParseProblem(FAILED, f"pandoc cannot read this {extension} (corrupt?): {detail or 'no output'}")
    return target

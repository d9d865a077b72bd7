"""Every requirement set scripts/install.sh installs must resolve on each interpreter a node may have (Debian 12's
own /usr/bin/python3.11 is 3.11.2; a newer 3.11 elsewhere), not only on the one the suite runs on. pip resolves
each set for each interpreter in a throwaway venv and installs nothing. It reaches PyPI, so scripts/test.sh runs
it (beside the suite: it waits on the network, not the CPU) instead of the test suite, which stays offline.

    python -m tests.deploy.resolve_requirements /usr/bin/python3.11 python3.11
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What scripts/install.sh installs, one pip call each (the same arguments, less --quiet).
SETS: dict[str, list[str]] = {
    "project": ["torch==2.13.0", "-c", "constraints.txt", ".[test]"],
    "unstructured-inference": ["--no-deps", "unstructured-inference==1.6.14"],
    "gpt-researcher": ["-r", "flows/research/gptr-requirements.txt"],
    "gateway": ["-r", "deployments/litellm/requirements.txt"],
}


def interpreter(name: str) -> tuple[str, str]:
    """(real path, full version) of an interpreter named by path or on PATH."""
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"error: no interpreter {name}")
    probe = "import sys; print(sys._base_executable); print('%d.%d.%d' % sys.version_info[:3])"
    path, version = subprocess.run([found, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    return str(Path(path).resolve()), version


def resolve(python: str, args: list[str], report: Path) -> str | None:
    """None when pip resolves the set for ``python``, else pip's last error line."""
    cmd = [sys.executable, "-m", "pip", "--python", python, "install", "--dry-run", "--ignore-installed"]
    try:
        done = subprocess.run(
            [*cmd, "--quiet", "--report", str(report), *args], cwd=REPO, capture_output=True, text=True, timeout=1200
        )
    except subprocess.TimeoutExpired:
        return "pip did not finish in 20 minutes"
    if done.returncode == 0:
        return None
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or [done.stderr.strip()]
    return errors[-1]


def main(names: list[str]) -> int:
    interpreters = dict(interpreter(name) for name in names)  # one entry per distinct interpreter
    with tempfile.TemporaryDirectory(prefix="resolve-") as tmp:
        jobs = []
        for n, (base, version) in enumerate(interpreters.items()):
            venv = Path(tmp) / f"venv{n}"
            subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
            for name, args in SETS.items():
                jobs.append((version, name, str(venv / "bin" / "python"), args, Path(tmp) / f"{n}-{name}.json"))
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # pip mostly waits on downloads; more at once only crowd the CPU
            errors = list(pool.map(lambda job: resolve(*job[2:]), jobs))
        failed = 0
        for (version, name, _, _, report), error in zip(jobs, errors, strict=True):
            if error:
                failed += 1
                print(f"python {version}: {name}: {error}")
                continue
            resolved = json.loads(report.read_text())
            assert resolved["environment"]["python_full_version"] == version  # pip ran under that interpreter
            print(f"python {version}: {name}: {len(resolved['install'])} packages resolve")
        print(f"resolved {len(jobs)} sets in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["/usr/bin/python3.11", "python3.11"]))

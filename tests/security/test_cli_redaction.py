"""The CLI's error line never prints a password, whatever form the node's ledger URL gives it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.flows.cli_runner import SWARM, swarm_env

PASSWORD = "s3cr#t?pw"  # a password with characters that end a URL's parts


@pytest.mark.parametrize(
    ("ledger_url", "code", "line"),
    [
        (f"postgresql://swarm@127.0.0.1:1/x?sslmode=disable&password={PASSWORD}", 1,
         "error: cannot reach the ledger at postgresql://swarm@127.0.0.1:1/x?sslmode=disable&password=***"),
        (f"postgresql://:{PASSWORD}@127.0.0.1:1/x", 1, "error: cannot reach the ledger at postgresql://:***@127.0.0.1:1/x:"),
        (f"postgresql://swarm:p@{PASSWORD}@127.0.0.1:1/x", 2,
         "error: ledger URL 'postgresql://swarm:***@127.0.0.1:1/x': its password holds a raw '@' or '/'"),
        (f"host=127.0.0.1 port=1 password='{PASSWORD} x'", 2, "error: ledger URL 'host=127.0.0.1 port=1 password=***"),
    ],
)  # fmt: skip
def test_the_error_line_hides_the_password_of_every_url_form(
    tmp_path: Path, ledger_url: str, code: int, line: str
) -> None:
    env = swarm_env(tmp_path) | {"SWARM_LEDGER_URL": ledger_url}
    result = subprocess.run([SWARM, "status"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == code, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output and PASSWORD not in output and "s3cr" not in output, output
    (error,) = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert error.startswith(line), error

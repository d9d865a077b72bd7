"""What systemd would start for one of the project's units: the ExecStart command, working directory and
environment, read from the unit file, so the end-to-end test runs what the unit says. Only the part of
systemd's syntax the units use is understood; anything else is refused rather than guessed."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# What systemd gives every service before the unit's own settings (its default PATH; HOME is User='s home).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Service:
    argv: list[str]
    working_directory: str
    environment: dict[str, str]  # Environment= lines, in order
    environment_files: list[tuple[str, bool]]  # EnvironmentFile= lines: (path, required)

    def env(self, read: Callable[[str], str | None], home: str) -> dict[str, str]:
        """The service's environment; ``read(path)`` gives a file's text on the node, None if it is absent.
        As in systemd, variables from EnvironmentFile= win over Environment=."""
        env = {**BASE_ENV, "HOME": home, **self.environment}
        for path, required in self.environment_files:
            text = read(path)
            if text is None:
                if required:
                    raise AssertionError(f"the unit needs {path}, which the node does not have")
                continue
            env.update(parse_env_file(text))
        return env


def _specifiers(value: str, instance: str) -> str:
    def one(match: re.Match[str]) -> str:
        spec = match.group(1)
        if spec in "iI":
            return instance
        if spec == "%":
            return "%"
        raise ValueError(f"unit specifier %{spec} is not understood by this test")

    return re.sub(r"%(.)", one, value)


def read_service(path: Path, instance: str = "") -> Service:
    """The [Service] section of a unit file, with %i replaced by ``instance``."""
    section = ""
    settings: list[tuple[str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            raise ValueError(f"{path.name}: continued lines are not understood by this test")
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.append((key.strip(), _specifiers(value.strip(), instance)))
    environment: dict[str, str] = {}
    files: list[tuple[str, bool]] = []
    argv: list[str] = []
    workdir = "/"
    for key, value in settings:
        if key == "Environment":
            for item in shlex.split(value):
                name, _, assigned = item.partition("=")
                environment[name] = assigned
        elif key == "EnvironmentFile":
            files.append((value.removeprefix("-"), not value.startswith("-")))
        elif key == "WorkingDirectory":
            workdir = value
        elif key == "ExecStart":
            if value[:1] in "-@:+!":
                raise ValueError(f"{path.name}: ExecStart prefixes are not understood by this test")
            argv = shlex.split(value)
    if not argv:
        raise ValueError(f"{path.name} has no ExecStart")
    return Service(argv, workdir, environment, files)


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments, blank lines, optional quotes)."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not an assignment: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def render_env(example: str, values: dict[str, str | None]) -> str:
    """An example env file with the given values: a key's line replaced (dropped for None), comments kept,
    keys the example lacks appended."""
    out: list[str] = []
    seen: set[str] = set()
    for line in example.splitlines():
        key = line.partition("=")[0].strip()
        if line.strip()[:1] not in ("#", ";", "") and key in values:
            seen.add(key)
            if values[key] is not None:
                out.append(f"{key}={values[key]}")
            continue
        out.append(line)
    out += [f"{key}={value}" for key, value in values.items() if key not in seen and value is not None]
    return "\n".join(out) + "\n"

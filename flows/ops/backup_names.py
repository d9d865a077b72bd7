"""Names that backup and restore take from parameters or servers: checked against what the service allows,
and turned into one safe path component or URL path segment.

A name the service allows can still be hostile elsewhere: PostgreSQL takes ``../../x`` as a database name,
so a name is never used as a path or URL as it is, only through :func:`path_component` / :func:`url_segment`.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from flows.common.errors import ConfigError

PG_NAME_MAX_BYTES = 63  # NAMEDATALEN - 1: a longer name is silently cut by the server
QDRANT_NAME_MAX = 255
QDRANT_FORBIDDEN = frozenset('<>:"/\\|?*\x00\x1f')  # what a Qdrant server refuses in a collection name


def database_name(name: str, parameter: str) -> str:
    """``name`` if PostgreSQL allows it as a database name, else a ConfigError naming ``parameter``."""
    if not name or "\x00" in name or len(name.encode()) > PG_NAME_MAX_BYTES:
        raise ConfigError(
            f"{parameter}: {name!r} is not a PostgreSQL database name (1 to {PG_NAME_MAX_BYTES} bytes, no NUL)"
        )
    return name


def collection_name(name: str, parameter: str) -> str:
    """``name`` if Qdrant allows it as a collection name, else a ConfigError naming ``parameter``."""
    bad = sorted(QDRANT_FORBIDDEN & set(name))
    if not name or len(name) > QDRANT_NAME_MAX or bad:
        shown = f": it holds {''.join(bad)!r}" if bad else ""
        raise ConfigError(
            f"{parameter}: {name!r} is not a Qdrant collection name (1 to {QDRANT_NAME_MAX} characters,"
            f" none of {''.join(sorted(QDRANT_FORBIDDEN - {chr(0), chr(31)}))!r}){shown}"
        )
    return name


def path_component(name: str) -> str:
    """One file-name-safe component for any name: letters, digits, ``_``, ``-`` and inner dots as they are,
    every other byte as ``%XX`` (a leading dot too), so no separator, ``.`` or ``..`` can appear and two
    names never share a component."""
    return re.sub(r"^\.|[^A-Za-z0-9_.-]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


def url_segment(name: str) -> str:
    """``name`` as one URL path segment: ``/``, ``?``, ``#`` and ``%`` escaped, and the dots of a ``.`` or
    ``..`` segment too (a client resolves those against the path before sending it), so it stays in place."""
    segment = quote(name, safe="")
    return segment.replace(".", "%2E") if set(name) == {"."} else segment

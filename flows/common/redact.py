"""Passwords in connection strings: hide them in messages, and refuse them where they must not be.

Covers the forms psycopg (libpq) and redis-py accept: a URL's userinfo (``://user:pw@``, ``://:pw@``, a raw
``@`` or ``?`` inside the password), a ``password=`` / ``sslpassword=`` query parameter, and libpq's
``key=value`` strings with quoted or backslash-escaped values. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from flows.common.errors import ConfigError

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Userinfo runs to the LAST "@" of a URL: redis-py splits there, and a raw "@" in a password must stay hidden
# even where libpq would split at the first one. Over-hiding a later "@" of the same word is the safe error.
_USERINFO = re.compile(rf"(?P<head>{_SCHEME.pattern}[^\s:/]*:)(?P<secret>\S*)(?P<tail>@)")
# A query parameter's value ends at "&" or a space (libpq keeps a raw "#" in it).
_QUERY = re.compile(r"(?i)(?P<head>[?&;](?:ssl)?password=)(?P<secret>[^&\s]*)")
# A key=value value: quoted (backslash escapes, maybe unterminated in a cut message) or up to a space.
_KEYWORD = re.compile(
    r"(?i)(?P<head>(?<![\w?&;.-])(?:ssl)?password\s*=\s*)(?P<secret>'(?:\\[\s\S]|[^'\\])*'?|(?:\\[\s\S]|[^\s\\])+)"
)
# Applied in this order, each on what the previous ones left: a query or key=value password is masked before
# the userinfo pattern looks for its "@", so an "@" inside such a password is not taken for a userinfo's end.
_PATTERNS = (_QUERY, _KEYWORD, _USERINFO)
# Below this length a known password is only hidden where a pattern finds it, not anywhere in the text.
_MIN_ANYWHERE = 4


def _keyword_value(raw: str) -> str:
    """A libpq key=value value as the server sees it: quotes removed, backslash escapes resolved."""
    if raw.startswith("'"):
        raw = raw[1:-1] if raw.endswith("'") and len(raw) > 1 else raw[1:]
    return re.sub(r"\\([\s\S])", r"\1", raw)


def _scan(text: str) -> tuple[str, dict[re.Pattern[str], list[str]]]:
    """``text`` with what each pattern finds masked, and what each found (as written)."""
    found: dict[re.Pattern[str], list[str]] = {}
    for pattern in _PATTERNS:
        found[pattern] = [m.group("secret") for m in pattern.finditer(text)]
        text = pattern.sub(lambda m: m.group("head") + MASK + (m.groupdict().get("tail") or ""), text)
    return text, found


def found_secrets(text: str) -> set[str]:
    """Every password the patterns find in ``text``, as written and decoded."""
    secrets: set[str] = set()
    for pattern, raws in _scan(text)[1].items():
        for raw in raws:
            secrets |= {raw, _keyword_value(raw) if pattern is _KEYWORD else unquote(raw)}
    return {s for s in secrets if s and s != MASK}


def parsed_password(dsn: str) -> str | None:
    """The password a client would send for ``dsn``: libpq's reading for PostgreSQL URLs and key=value
    strings, urllib's (as redis-py) for any other URL; None when it holds none or cannot be parsed."""
    if _SCHEME.match(dsn) and not dsn.startswith(("postgresql://", "postgres://")):
        try:
            parts = urlsplit(dsn)
            query = dict(parse_qsl(parts.query))
        except ValueError:
            return None
        return unquote(parts.password) if parts.password else query.get("password") or None
    import psycopg  # libpq's own parser, imported only where a DSN is read
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn).get("password") or None  # type: ignore[return-value]
    except psycopg.Error:  # not a connection string at all
        return None


def redact(text: str, *dsns: str | None) -> str:
    """``text`` with every password hidden: those the patterns find, and those the connection strings
    ``dsns`` carry wherever they appear (as written, percent-encoded or decoded) — a library's error
    message may quote a password in a form no pattern knows."""
    known = set(found_secrets(text))
    for dsn in dsns:
        if dsn:
            known |= found_secrets(dsn)
            if password := parsed_password(dsn):
                known |= {password, quote(password, safe="")}
    out = _scan(text)[0]
    for secret in sorted(known, key=len, reverse=True):
        if len(secret) >= _MIN_ANYWHERE:
            out = out.replace(secret, MASK)
    return out


def has_password(dsn: str) -> bool:
    """Whether ``dsn`` carries a password in any form a client accepts (or one a client would misread)."""
    return bool(found_secrets(dsn) or parsed_password(dsn))


def misread_password(dsn: str) -> bool:
    """True when libpq would read another password than the one written in the URL's userinfo: a raw "@" or
    "/" in it makes libpq split early and quote the rest of the password as a host, port or database name."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        return False
    written = _scan(dsn)[1][_USERINFO]
    return bool(written) and unquote(written[0]) != (parsed_password(dsn) or "")


def refuse_password(parameter: str, value: str | None) -> None:
    """A ConfigError when a run's parameter carries a password: Prefect stores run parameters in clear (the
    UI's Parameters tab, the database), so a password belongs in a block or the node's environment."""
    if value and has_password(value):
        raise ConfigError(
            f"{parameter}: {redact(value)!r} holds a password, which Prefect would store in clear with the run:"
            " drop it from the URL and save it in a block (the *_block parameters) or the node's environment"
        )

"""Who may read a document: a source's permissions as reader strings, and a reader's identity as the values a
search must match (pure functions).

A document's ``readers`` payload is a sorted list of:

* ``user:<email>``, ``group:<email>``: a Google account or group the document is shared with (any role: every
  Drive role, from reader up to owner, can read);
* ``domain:<domain>``: everyone in a Google Workspace domain (shared with the domain or by link within it);
* ``anyone``: anyone on the internet or anyone with the link.

An empty list means nobody but the service account that indexed it: what a document whose permissions cannot be
read gets. A search as ``alice@x.com`` in groups ``eng@x.com`` matches a point when any of its readers is one of
``anyone``, ``domain:x.com``, ``user:alice@x.com``, ``group:eng@x.com``.

A permission may carry an ``expirationTime`` (user and group ones, at most a year ahead; developers.google.com/
workspace/drive/api/reference/rest/v3/permissions): past it, it grants nothing, though a listing may still show it
until Drive removes it. Nothing in the change feed reports a lapse, so the time the readers next change is
computed too (:func:`next_lapse`), for the sync to refresh them then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from flows.common.errors import ConfigError

ANYONE = "anyone"
# A source that knows no permissions (a local folder): whoever may query the collection may read it.
EVERYONE: tuple[str, ...] = (ANYONE,)
PRIVATE: tuple[str, ...] = ()  # permissions unreadable: the service account alone


def readers_of(permissions: Iterable[Mapping[str, Any]], now: datetime) -> tuple[str, ...]:
    """Drive permission resources (type, emailAddress, domain, role, expirationTime; developers.google.com/workspace/
    drive/api/reference/rest/v3/permissions) → sorted, unique reader strings granted at ``now``. A permission of a
    deleted account, of an unknown type or expired grants nobody."""
    return tuple(sorted({reader for reader, until in _grants(permissions) if until is None or until > now}))


def next_lapse(permissions: Iterable[Mapping[str, Any]], now: datetime) -> datetime | None:
    """When the readers granted at ``now`` next shrink: the earliest time one of them loses its last unexpired
    grant; None: no grant of theirs expires. A reader granted twice keeps reading until the later one lapses."""
    last: dict[str, datetime | None] = {}
    for reader, until in _grants(permissions):
        if until is not None and until <= now:
            continue
        held = last.get(reader, until)
        last[reader] = None if held is None or until is None else max(held, until)
    ends = [until for until in last.values() if until is not None]
    return min(ends) if ends else None


def _grants(permissions: Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, datetime | None]]:
    """(reader, expiry or None) per permission that names a reader."""
    for permission in permissions:
        if permission.get("deleted"):
            continue
        kind = permission.get("type")
        email = str(permission.get("emailAddress") or "").strip().lower()
        domain = str(permission.get("domain") or "").strip().lower()
        if kind in ("user", "group") and email:
            reader = f"{kind}:{email}"
        elif kind == "domain" and domain:
            reader = f"domain:{domain}"
        elif kind == "anyone":
            reader = ANYONE
        else:
            continue
        yield reader, _expiry(permission.get("expirationTime"))


def _expiry(value: object) -> datetime | None:
    """An expirationTime as an aware instant; None when absent. One that cannot be read is taken as past (the
    permission grants nothing): a reader is left out rather than let in by a time nobody can check."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def allowed_readers(email: str, groups: Sequence[str] = ()) -> list[str]:
    """The reader values a search as ``email`` (a member of ``groups``) may see: itself, its groups, its email's
    domain, and ``anyone``. A group named without a domain ("eng") is taken to be in the user's ("eng@x.com"):
    Drive shares with a group by its email."""
    user = email.strip().lower()
    local, _, domain = user.partition("@")
    if not local or not domain or "@" in domain:
        raise ConfigError(f"--as needs an email address like alice@example.com, not {email!r}")
    values = [ANYONE, f"domain:{domain}", f"user:{user}"]
    for group in groups:
        name = group.strip().lower()
        if name:
            values.append(f"group:{name}" if "@" in name else f"group:{name}@{domain}")
    return list(dict.fromkeys(values))


def reader_filter(email: str | None, groups: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """The search filter for a reader (flows/rag/store.py's ``must``); none without one: whoever searches without
    naming a reader reads the store directly anyway."""
    if not email:
        if any(group.strip() for group in groups):
            raise ConfigError("groups need a reader (--as, or the flow's reader): the one they belong to")
        return []
    return [("readers", allowed_readers(email, groups))]

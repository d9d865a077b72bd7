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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flows.common.errors import ConfigError

ANYONE = "anyone"
# A source that knows no permissions (a local folder): whoever may query the collection may read it.
EVERYONE: tuple[str, ...] = (ANYONE,)
PRIVATE: tuple[str, ...] = ()  # permissions unreadable: the service account alone


def readers_of(permissions: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """Drive permission resources (type, emailAddress, domain, role; developers.google.com/workspace/drive/api/
    reference/rest/v3/permissions) → sorted, unique reader strings. A permission of a deleted account or of an
    unknown type grants nobody."""
    readers: set[str] = set()
    for permission in permissions:
        if permission.get("deleted"):
            continue
        kind = permission.get("type")
        email = str(permission.get("emailAddress") or "").strip().lower()
        domain = str(permission.get("domain") or "").strip().lower()
        if kind in ("user", "group") and email:
            readers.add(f"{kind}:{email}")
        elif kind == "domain" and domain:
            readers.add(f"domain:{domain}")
        elif kind == "anyone":
            readers.add(ANYONE)
    return tuple(sorted(readers))


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

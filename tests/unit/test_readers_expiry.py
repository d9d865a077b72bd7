"""Permissions with an expirationTime: what they grant at a given time, and when a document's readers next shrink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.rag.readers import next_lapse, readers_of
from flows.rag.sources.gdrive_refs import access_of, folder_access
from flows.rag.sources.gdrive_tree import KIND_FOLDER_SHORTCUT, Node, Tree

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _user(email: str, expires: datetime | str | None = None) -> dict:
    permission = {"type": "user", "role": "reader", "emailAddress": email}
    if expires is not None:
        permission["expirationTime"] = expires if isinstance(expires, str) else expires.isoformat()
    return permission


def test_a_permission_grants_until_its_expiration_time_and_nothing_from_then() -> None:
    permissions = [
        {"type": "user", "role": "owner", "emailAddress": "ann@example.com"},
        _user("bob@example.com", NOW + timedelta(hours=1)),
        _user("eve@example.com", NOW - timedelta(seconds=1)),  # lapsed: Drive has not removed it yet
    ]
    assert readers_of(permissions, NOW) == ("user:ann@example.com", "user:bob@example.com")
    assert readers_of(permissions, NOW + timedelta(hours=1)) == ("user:ann@example.com",)  # the instant itself
    assert next_lapse(permissions, NOW) == NOW + timedelta(hours=1)
    assert next_lapse(permissions, NOW + timedelta(hours=1)) is None  # what is left never lapses


def test_the_next_lapse_is_when_a_reader_loses_its_last_grant() -> None:
    soon, later = NOW + timedelta(hours=1), NOW + timedelta(days=2)
    permissions = [
        _user("bob@example.com", soon),
        _user("bob@example.com", later),  # Bob reads on until his later grant lapses
        _user("cat@example.com", soon),
        {"type": "user", "emailAddress": "cat@example.com"},  # and Cat for good
    ]
    assert next_lapse(permissions, NOW) == later
    assert readers_of(permissions, soon) == ("user:bob@example.com", "user:cat@example.com")
    assert readers_of(permissions, later) == ("user:cat@example.com",)
    assert next_lapse([_user("a@x.com", later), _user("b@x.com", soon)], NOW) == soon


def test_drives_time_format_and_unreadable_times() -> None:
    permissions = [
        _user("bob@example.com", "2026-03-01T10:00:00.000Z"),  # as Drive writes it
        _user("eve@example.com", "next tuesday"),  # unreadable: grants nothing rather than everything
        _user("tom@example.com", "2026-03-01T09:30:00"),  # no zone: UTC
    ]
    assert readers_of(permissions, NOW) == ("user:bob@example.com", "user:tom@example.com")
    assert next_lapse(permissions, NOW) == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_a_files_access_and_what_a_folder_passes_on() -> None:
    item = {"id": "f", "permissions": [_user("bob@example.com", NOW + timedelta(hours=1))]}
    assert access_of(item, None, NOW) == (("user:bob@example.com",), NOW + timedelta(hours=1))
    assert access_of({"id": "s", "driveId": "0A"}, [_user("ann@x.com")], NOW) == (("user:ann@x.com",), None)
    assert access_of({"id": "v"}, None, NOW) == ((), None)  # not listed nor readable: private
    # A folder's sharing compares equal while it grants the same readers until the same time, and is unknown
    # where its listing does not show it.
    assert folder_access(item, NOW) == folder_access({**item, "name": "renamed"}, NOW)
    assert folder_access(item, NOW) != folder_access(item, NOW + timedelta(hours=2))
    assert folder_access({"id": "d", "driveId": "0A"}, NOW) is None


def test_the_folders_that_inherit_a_folders_sharing_are_those_below_it_by_parenthood() -> None:
    tree = Tree({"root": "Team"})
    tree.put("a", Node("root", "A"))
    tree.put("b", Node("a", "B"))
    tree.put("c", Node("b", "C"))
    tree.put("x", Node("root", "X"))
    tree.put("s", Node("a", "to X", KIND_FOLDER_SHORTCUT, "x"))  # X keeps its own sharing
    assert tree.folders_under(["a"]) == ["a", "b", "c"]
    assert sorted(tree.folders_under(["root"])) == ["a", "b", "c", "root", "x"]

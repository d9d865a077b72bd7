"""The folder tree of a Drive scope, as pure data: which folders are in scope and their paths.

Scope = the root folders / shared drives, everything below them, and the target folders of folder
shortcuts found inside the scope (each target followed once: a visited set stops shortcut cycles).
Recomputing the in-scope paths is one breadth-first walk, O(folders), cheap enough (50k folders: ~50 ms)
to do before and after applying a batch of changes and diff the two.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Container
from dataclasses import dataclass

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"

# Node kinds as stored in the ledger.
KIND_FOLDER = "folder"
KIND_FOLDER_SHORTCUT = "shortcut-folder"
KIND_FILE_SHORTCUT = "shortcut-file"


@dataclass(slots=True)
class Node:
    """A folder, or a shortcut (``target`` set) living in ``parent``."""

    parent: str | None
    name: str
    kind: str = KIND_FOLDER
    target: str | None = None
    access: str | None = None  # a folder's gdrive_refs.folder_access, to tell a sharing change; None: unknown


def first_parent(item: dict, prefer: Container[str] | None = None) -> str | None:
    parents = item.get("parents") or []
    if prefer:
        for parent in parents:
            if parent in prefer:
                return parent
    return parents[0] if parents else None


def node_from_item(item: dict) -> Node | None:
    """A folder or shortcut node from a Drive file resource; None for ordinary files."""
    mime = item.get("mimeType")
    parent = first_parent(item)
    if mime == FOLDER:
        return Node(parent, item.get("name", ""), KIND_FOLDER)
    if mime == SHORTCUT:
        details = item.get("shortcutDetails") or {}
        kind = KIND_FOLDER_SHORTCUT if details.get("targetMimeType") == FOLDER else KIND_FILE_SHORTCUT
        return Node(parent, item.get("name", ""), kind, details.get("targetId"))
    return None


class Tree:
    """Folders and shortcuts seen in the scope, keyed by Drive id."""

    def __init__(self, roots: dict[str, str]) -> None:
        self.roots = roots  # root folder or shared-drive id -> display name
        self.root_access: dict[str, str | None] = {}  # root folder id -> its folder_access, as Node.access
        self.nodes: dict[str, Node] = {}
        self.dirty: set[str] = set()  # ids to upsert into the ledger
        self.deleted: set[str] = set()  # ids to delete from the ledger

    def put(self, node_id: str, node: Node) -> None:
        self.nodes[node_id] = node
        self.dirty.add(node_id)
        self.deleted.discard(node_id)

    def drop(self, node_id: str) -> None:
        if self.nodes.pop(node_id, None) is not None:
            self.deleted.add(node_id)
        self.dirty.discard(node_id)

    def scope_paths(self) -> dict[str, str]:
        """In-scope folder id -> path ("Root/sub/dir"), following folder shortcuts once."""
        children: dict[str, list[tuple[str, Node]]] = defaultdict(list)
        for node_id, node in self.nodes.items():
            if node.parent is not None and node.kind != KIND_FILE_SHORTCUT:
                children[node.parent].append((node_id, node))
        paths: dict[str, str] = {}
        queue: deque[str] = deque()
        for root_id in sorted(self.roots):
            paths[root_id] = self.roots[root_id]
            queue.append(root_id)
        while queue:
            folder_id = queue.popleft()
            base = paths[folder_id]
            for node_id, node in sorted(children.get(folder_id, ()), key=lambda c: c[0]):
                target = node_id if node.kind == KIND_FOLDER else node.target
                if target is None or target in paths:
                    continue  # already reached: a second path or a shortcut cycle
                paths[target] = f"{base}/{node.name}"
                queue.append(target)
        return paths

    def folders_under(self, starts: list[str]) -> list[str]:
        """``starts`` and the folders below them by parenthood alone, what inherits their sharing (a folder
        shortcut's target keeps its own), each once."""
        children: dict[str, list[str]] = defaultdict(list)
        for node_id, node in self.nodes.items():
            if node.parent is not None and node.kind == KIND_FOLDER:
                children[node.parent].append(node_id)
        found = dict.fromkeys(starts)
        queue = deque(starts)
        while queue:
            for child in children.get(queue.popleft(), ()):
                if child not in found:
                    found[child] = None
                    queue.append(child)
        return list(found)

    def file_shortcuts(self, paths: dict[str, str]) -> dict[str, tuple[str, str]]:
        """Target file id -> (shortcut id, path) for file shortcuts that are in scope."""
        found: dict[str, tuple[str, str]] = {}
        for node_id, node in sorted(self.nodes.items()):
            if node.kind == KIND_FILE_SHORTCUT and node.target and node.parent in paths:
                found.setdefault(node.target, (node_id, f"{paths[node.parent]}/{node.name}"))
        return found

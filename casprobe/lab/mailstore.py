"""The mailbox contents behind the lab's EWS and MAPI answers: folders and messages per user.

Small and in memory: enough for a message sent with EWS CreateItem (SendAndSaveCopy) to appear in the sender's
Sent Items and in every lab recipient's Inbox, for FindItem to page over it and for a MAPI NotificationWait to
learn that something arrived.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["DISTINGUISHED_FOLDERS", "MAX_MESSAGES_PER_FOLDER", "Folder", "MailStore", "Mailbox", "Message"]

# distinguished folder id -> display name, folder class
DISTINGUISHED_FOLDERS: dict[str, tuple[str, str]] = {
    "root": ("Root", ""),
    "msgfolderroot": ("Top of Information Store", "IPF.Note"),
    "inbox": ("Inbox", "IPF.Note"),
    "sentitems": ("Sent Items", "IPF.Note"),
    "drafts": ("Drafts", "IPF.Note"),
    "deleteditems": ("Deleted Items", "IPF.Note"),
    "outbox": ("Outbox", "IPF.Note"),
    "junkemail": ("Junk Email", "IPF.Note"),
    "calendar": ("Calendar", "IPF.Appointment"),
    "contacts": ("Contacts", "IPF.Contact"),
    "tasks": ("Tasks", "IPF.Task"),
    "notes": ("Notes", "IPF.StickyNote"),
}

_ids = itertools.count(1)


def _make_id(kind: str, owner: str, n: int) -> str:
    raw = hashlib.sha256(f"{kind}:{owner}:{n}".encode()).digest()
    return base64.b64encode(b"\x00\x00" + raw + n.to_bytes(8, "little")).decode()


@dataclass(slots=True)
class Message:
    """A stored message."""

    item_id: str
    change_key: str
    subject: str
    body: str
    sender: str
    to: tuple[str, ...]
    received: datetime
    is_read: bool = False


@dataclass(slots=True)
class Folder:
    """A folder: its distinguished name, ids and messages (newest last)."""

    distinguished: str
    folder_id: str
    change_key: str
    display_name: str
    folder_class: str
    messages: list[Message] = field(default_factory=list)

    @property
    def unread(self) -> int:
        return sum(1 for m in self.messages if not m.is_read)


#: the newest messages a folder keeps (older ones are dropped, as a retention policy would)
MAX_MESSAGES_PER_FOLDER = 500


class Mailbox:
    """One user's folders (each keeps its newest :data:`MAX_MESSAGES_PER_FOLDER` messages)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.folders: dict[str, Folder] = {}
        for i, (name, (display, cls)) in enumerate(DISTINGUISHED_FOLDERS.items()):
            fid = _make_id("folder", owner, i)
            self.folders[name] = Folder(name, fid, "AQAAABYAAA" + fid[:8], display, cls)
        self.version = 0

    def folder(self, key: str) -> Folder | None:
        """A folder by distinguished name or by folder id."""
        found = self.folders.get(key.lower())
        if found is not None:
            return found
        return next((f for f in self.folders.values() if f.folder_id == key), None)

    @property
    def child_folder_count(self) -> int:
        return len(self.folders) - 2

    def add(self, folder: str, subject: str, body: str, sender: str, to: tuple[str, ...]) -> Message:
        n = next(_ids)
        item_id = _make_id("item", self.owner, n)
        msg = Message(item_id, "CQAAABYAAA" + item_id[:8], subject, body, sender, to, datetime.now(UTC))
        messages = self.folders[folder].messages
        messages.append(msg)
        if len(messages) > MAX_MESSAGES_PER_FOLDER:  # a long load run must not grow the lab without bound
            del messages[: len(messages) - MAX_MESSAGES_PER_FOLDER]
        self.version += 1
        return msg


class MailStore:
    """All mailboxes of the lab, created on first use."""

    def __init__(self) -> None:
        self._boxes: dict[str, Mailbox] = {}

    def mailbox(self, smtp: str) -> Mailbox:
        key = smtp.lower()
        box = self._boxes.get(key)
        if box is None:
            box = self._boxes[key] = Mailbox(key)
            box.add(
                "inbox",
                "Welcome to the casprobe lab",
                "This mailbox is simulated.",
                f"postmaster@{key.split('@')[-1]}",
                (key,),
            )
        return box

"""The lab's mail store keeps each folder bounded (a long Locust run of CreateItem must not grow it forever)."""

from __future__ import annotations

from casprobe.lab.mailstore import MAX_MESSAGES_PER_FOLDER, Mailbox


def test_a_folder_keeps_only_its_newest_messages() -> None:
    """Past the cap the oldest messages go; the newest stay, in order."""
    box = Mailbox("alice@lab.test")
    for i in range(MAX_MESSAGES_PER_FOLDER + 25):
        box.add("inbox", f"m{i}", "", "bob@lab.test", ("alice@lab.test",))
    subjects = [m.subject for m in box.folders["inbox"].messages]
    assert len(subjects) == MAX_MESSAGES_PER_FOLDER
    assert subjects[0] == "m25"
    assert subjects[-1] == f"m{MAX_MESSAGES_PER_FOLDER + 24}"

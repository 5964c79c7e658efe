"""The lab's organisation model: names, copies, users, component states and database moves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from casprobe.errors import ConfigError, LabError
from casprobe.lab.components import ComponentStates
from casprobe.lab.events import EventLog, read_events
from casprobe.lab.org import LabConfig, Org, build_org
from casprobe.lab.world import LabWorld


@pytest.mark.parametrize(("servers", "databases"), [(1, 0), (3, 0), (3, 5), (5, 2)])
def test_every_database_has_a_copy_per_server_and_at_least_one_user(servers: int, databases: int) -> None:
    """Databases are spread over the DAG (active copies round robin) and every database holds mailboxes."""
    org = build_org(LabConfig(servers=servers, databases=databases))
    n_db = databases or servers
    assert [d.name for d in org.databases] == [f"DB{i:02d}" for i in range(1, n_db + 1)]
    for db in org.databases:
        assert sorted(db.copies) == sorted(org.server_names)
        assert any(u.database == db.name for u in org.users)
    assert len({s.address for s in org.servers} | {org.lb_address}) == servers + 1
    assert {db.copies[0] for db in org.databases} == set(org.server_names[: min(servers, n_db)])


def test_user_identities_follow_exchange_conventions() -> None:
    """legacyDN, MailboxId and the names a user can be found by match what Exchange clients send."""
    org = build_org(LabConfig())
    alice = org.users[0]
    assert alice.smtp == "alice@lab.test"
    assert alice.legacy_dn.startswith("/o=LAB/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=")
    assert alice.mailbox_id == f"{alice.mailbox_guid}@lab.test"
    for key in ("alice@lab.test", "LAB\\alice", "lab\\ALICE", alice.legacy_dn.upper(), alice.mailbox_id):
        assert org.find_user(key) == alice
    assert org.find_user("OTHER\\alice") is None
    assert org.find_user("nobody@lab.test") is None
    assert org.names()["outlook.lab.test"] == "127.0.0.10"
    assert org.names()["mb2.lab.test"] == "127.0.0.12"


def test_organisation_survives_a_json_round_trip(tmp_path: Path) -> None:
    """What lab up saves is what the lab process loads."""
    org = build_org(LabConfig(servers=2, url_mode={"mb2": "server"}))
    org.save(tmp_path / "org.json")
    assert Org.load(tmp_path / "org.json") == org


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (LabConfig(servers=0), "--servers"),
        (LabConfig(base_address="10.0.0.1"), "loopback"),
        (LabConfig(base_address="127.255.255.254", servers=3), "loopback"),
        (LabConfig(base_address="not-an-ip"), "not an IPv4"),
        (LabConfig(lb="l5"), "--lb"),  # type: ignore[arg-type]
        (LabConfig(check_inter_ms=10), "inter"),
    ],
)
def test_bad_lab_configurations_are_refused_with_a_clear_message(config: LabConfig, message: str) -> None:
    """A configuration the lab cannot run raises ConfigError naming the problem, before anything starts."""
    with pytest.raises(ConfigError, match=message):
        build_org(config)


def test_server_wide_offline_overrides_all_but_monitoring() -> None:
    """ServerWideOffline Inactive turns every protocol component inactive; Monitoring stays Active."""
    states = ComponentStates()
    assert states.vdir_active("mapi")
    assert states.vdir_active("EWS")
    states.set("ServerWideOffline", "Inactive")
    assert not states.vdir_active("mapi")
    assert states.effective("Monitoring") == "Active"
    states.set("ServerWideOffline", "Active")
    assert states.vdir_active("mapi")


def test_a_component_is_active_only_when_no_requester_holds_it_inactive() -> None:
    """Requesters hold independent states, as Set-ServerComponentState does."""
    states = ComponentStates()
    states.set("MapiProxy", "Inactive", requester="HealthApi")
    states.set("MapiProxy", "Active", requester="Maintenance")
    assert not states.vdir_active("mapi")
    states.set("MapiProxy", "Active", requester="HealthApi")
    assert states.vdir_active("mapi")


def test_a_database_move_bumps_the_generation_and_logs_start_and_end(tmp_path: Path) -> None:
    """During a move the database has no mounted copy; old session generations die; the event log says when."""
    org = build_org(LabConfig(switchover_s=0.05))
    events = EventLog(tmp_path / "events.jsonl")
    world = LabWorld(org, events)
    alice = org.users[0]
    before = world.backend_for(alice)
    assert before is not None
    assert before.server == "mb1"

    async def scenario() -> None:
        move = asyncio.create_task(world.dag.move(alice.database, "mb2", "switchover"))
        await asyncio.sleep(0.01)
        assert world.backend_for(alice) is None
        await move

    asyncio.run(scenario())
    after = world.backend_for(alice)
    assert after is not None
    assert after.server == "mb2"
    assert not world.session_valid(alice, before.generation)
    assert world.session_valid(alice, after.generation)
    kinds = [e.kind for e in read_events(tmp_path / "events.jsonl")]
    assert kinds == ["copy.move.start", "copy.move.end"]


def test_moves_refuse_a_server_without_a_copy_or_powered_off(tmp_path: Path) -> None:
    """A switchover target must hold a copy and be up."""
    org = build_org(LabConfig(servers=2))
    world = LabWorld(org, EventLog(tmp_path / "e.jsonl"))
    world.power["mb2"] = "refuse"
    with pytest.raises(LabError, match="powered off"):
        asyncio.run(world.dag.move("DB01", "mb2", "switchover"))
    with pytest.raises(LabError, match="no copy on mb9"):
        asyncio.run(world.dag.move("DB01", "mb9", "switchover"))


def test_delivery_wakes_a_waiting_notification(tmp_path: Path) -> None:
    """A message delivered to a user ends that user's wait_for_change at once (NotificationWait's trigger)."""
    org = build_org(LabConfig())
    world = LabWorld(org, EventLog(tmp_path / "e.jsonl"))
    alice, bob = org.users[0], org.users[1]

    async def scenario() -> tuple[bool, bool]:
        since = world.change_counter(alice)
        waiter = asyncio.create_task(world.wait_for_change(alice, since, 5.0))
        await asyncio.sleep(0.01)
        world.deliver(bob, "hi", "body", (alice.smtp,), save_copy=True)
        woke = await asyncio.wait_for(waiter, 1.0)
        idle = await world.wait_for_change(bob, world.change_counter(bob), 0.05)
        return woke, idle

    woke, idle = asyncio.run(scenario())
    assert woke is True
    assert idle is False
    assert [m.subject for m in world.mail.mailbox(alice.smtp).folders["inbox"].messages][-1] == "hi"
    assert world.mail.mailbox(bob.smtp).folders["sentitems"].messages[-1].subject == "hi"

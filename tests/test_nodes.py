"""Which listed node takes the writes (health.nodes): pure logic, no server."""

from __future__ import annotations

import pytest

from django_rwsplit.health.nodes import (
    NodeReading,
    choose,
    listed_nodes,
    node_settings,
    roles,
)

OURS = "7300000000000000001"
OTHER = "7300000000000000999"


def writable(node: str, timeline: int, system_id: str = OURS) -> NodeReading:
    return NodeReading(
        node, True, in_recovery=False, timeline=timeline, system_id=system_id
    )


def standby(node: str, timeline: int = 1) -> NodeReading:
    return NodeReading(node, True, in_recovery=True, timeline=timeline, system_id=OURS)


def down(node: str) -> NodeReading:
    return NodeReading(node, False, error="connection refused")


@pytest.mark.parametrize(
    ("settings", "nodes"),
    [
        ({"HOST": "a,b,c", "PORT": "1,2,3"}, ["a:1", "b:2", "c:3"]),
        ({"HOST": "a, b", "PORT": "6432"}, ["a:6432", "b:6432"]),
        ({"HOST": "a,b", "PORT": ""}, ["a:5432", "b:5432"]),
        ({"HOST": "a,b,c", "PORT": "1,2"}, []),  # libpq would refuse it too
        ({"HOST": "db.example.com", "PORT": 5432}, ["db.example.com:5432"]),
    ],
)
def test_listed_nodes_follow_libpqs_rules(settings, nodes):
    assert listed_nodes(settings) == nodes


def test_a_node_is_checked_without_the_read_write_requirement():
    narrowed = node_settings(
        {
            "HOST": "a,b",
            "PORT": "1,2",
            "OPTIONS": {"target_session_attrs": "read-write"},
        },
        "b:2",
    )
    assert (narrowed["HOST"], narrowed["PORT"]) == ("b", "2")
    assert "target_session_attrs" not in narrowed["OPTIONS"]


def test_the_one_writable_node_takes_the_writes():
    choice = choose([down("a:1"), writable("b:2", 2), standby("c:3", 2)], None)
    assert (choice.node, choice.timeline, choice.system_id) == ("b:2", 2, OURS)
    assert choice.fenced == () and choice.foreign == ()


def test_two_writable_nodes_the_newest_timeline_wins_the_other_is_fenced():
    old, new = writable("a:1", 1), writable("b:2", 2)
    for readings in ([old, new], [new, old]):
        choice = choose(readings, OURS)
        assert choice.node == "b:2"
        assert choice.fenced == (old,)


def test_equal_timelines_go_to_the_first_listed_node():
    choice = choose([writable("a:1", 3), writable("b:2", 3)], OURS)
    assert choice.node == "a:1" and [r.node for r in choice.fenced] == ["b:2"]


def test_a_node_of_another_system_is_never_chosen():
    stranger = writable("a:1", 9, OTHER)
    choice = choose([stranger, writable("b:2", 2)], OURS)
    assert choice.node == "b:2" and choice.foreign == (stranger,)
    alone = choose([stranger], OURS)
    assert alone.node is None and alone.foreign == (stranger,)


def test_no_writable_node_means_no_choice():
    choice = choose([down("a:1"), standby("b:2")], OURS)
    assert choice.node is None and choice.fenced == ()


def test_each_listed_node_gets_its_role_in_the_order_listed():
    found = [
        writable("a:1", 1),
        writable("b:2", 2),
        standby("c:3", 2),
        down("d:4"),
        writable("e:5", 7, OTHER),
    ]
    listed = roles(found, choose(found, OURS))
    assert [(n.node, n.role, n.timeline) for n in listed] == [
        ("a:1", "fenced", 1),
        ("b:2", "primary", 2),
        ("c:3", "standby", 2),
        ("d:4", "unreachable", None),
        ("e:5", "foreign", 7),
    ]


def test_the_command_lists_the_nodes_and_when_writes_moved():
    from django_rwsplit.health.document import HealthSnapshot
    from django_rwsplit.health.readings import NodeRole, PrimaryStatus
    from django_rwsplit.management.health_rounds import render_table

    primary = PrimaryStatus(
        alias="default",
        endpoint="b:2",
        reachable=True,
        checked_at=1.0,
        in_recovery=False,
        node="b:2",
        timeline=2,
        nodes=(NodeRole("a:1", "standby", 2), NodeRole("b:2", "primary", 2)),
    )
    lines = render_table(
        HealthSnapshot(primary=primary, replicas=(), primary_changed_at=0.0)
    )
    assert "nodes of default: a:1 standby (timeline 2), b:2 primary (timeline 2)" in (
        lines
    )
    assert lines[-1].startswith("writes last moved to b:2 at ")
    document = HealthSnapshot(primary=primary, replicas=()).as_dict()
    assert document["primary"]["nodes"][1] == {
        "node": "b:2",
        "role": "primary",
        "timeline": 2,
    }
    assert document["primary"]["changed_at"] is None

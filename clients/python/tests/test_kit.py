"""Servers, roles and notifications through the typed client."""

from __future__ import annotations

import time

import pytest

from coherence_client import InvalidArgument, Message, Role, Subscribed
from support import eventually


def test_both_servers_are_listed_and_each_knows_its_role(a, b):
    assert eventually(
        lambda: {"py-a", "py-b"} <= {s.server_id for s in a.servers().list().servers}
    )
    roles = [a.servers().role(), b.servers().role()]
    assert [r.server_id for r in roles] == ["py-a", "py-b"]
    assert all(r.role is not Role.UNKNOWN for r in roles), roles
    assert sum(r.role.runs_scheduled_work for r in roles) <= 1


def test_watch_role_starts_with_the_current_role(a):
    with a.servers().watch_role() as roles:
        first = next(roles)
    assert first.server_id == "py-a"


def test_a_notification_published_through_one_server_reaches_a_subscriber_on_another(a, b, key):
    topic = key("topic")
    deadline = time.monotonic() + 20
    with a.notifications().subscribe([topic]) as events:
        assert isinstance(next(events), Subscribed)
        assert b.notifications().publish(topic, b"page:42") >= 1
        for event in events:
            if isinstance(event, Message):
                assert (event.topic, event.payload, event.publisher) == (topic, b"page:42", "py-b")
                break
            assert time.monotonic() < deadline, "no message within 20 s"


def test_an_oversized_payload_is_refused_naming_the_limit(a, key):
    with pytest.raises(InvalidArgument) as raised:
        a.notifications().publish(key("topic"), b"x" * (64 * 1024 + 1))
    assert "payload" in str(raised.value)

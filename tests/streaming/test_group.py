"""The consumer group's housekeeping against a real redis-server: own pending entries,
claims of a dead consumer's entries, delivery counts, and leaving only when nothing is
held (never dropping an entry a consumer still holds)."""

from __future__ import annotations

import time

import redis

from ctcd.streaming.group import Group
from ctcd.streaming.settings import ScorerSettings, heartbeat_key


def _group(stream: str, consumer: str, **kwargs: object) -> ScorerSettings:
    return ScorerSettings(model_uri="models:/m/1", stream=stream, group="g", consumer=consumer,
                          start_id="0", **kwargs)  # type: ignore[arg-type]


def test_a_dead_consumers_entries_are_claimed_counted_and_it_is_removed(
    rclient: redis.Redis, stream: str
) -> None:
    dead = Group(_group(stream, "dead", min_idle_ms=100), rclient)
    alive = Group(_group(stream, "alive", min_idle_ms=100), rclient)
    dead.ensure()
    alive.ensure()  # a second create of the same group is fine
    ids = [rclient.xadd(stream, {"data": f"{i}"}).decode() for i in range(3)]
    rclient.xreadgroup("g", "dead", {stream: ">"}, count=10)  # read, never acknowledged
    assert [i for i, _ in dead.own_pending("0")] == ids
    assert not alive.leave_if_idle("dead")  # it holds them: it stays
    assert alive.claim() == []  # not idle long enough yet
    time.sleep(0.2)
    while not alive.claim_due():
        time.sleep(0.05)
    claimed = alive.claim()
    assert [i for i, _ in claimed] == ids and alive.claimed == 3
    # read by "dead", re-read from its own pending list, then claimed: three deliveries
    assert alive.deliveries(ids) == dict.fromkeys(ids, 3)
    assert dead.own_pending("0") == []
    rclient.xack(stream, "g", *ids)
    rclient.set(heartbeat_key(stream, "g", "alive"), "{}")
    time.sleep(0.2)  # "dead" idle for over min_idle_ms
    alive.prune_departed()  # no heartbeat, nothing pending: gone; this consumer stays
    names = {c["name"].decode() for c in rclient.xinfo_consumers(stream, "g")}
    assert names == {"alive"}
    assert alive.leave_if_idle("alive")
    assert rclient.xinfo_consumers(stream, "g") == []

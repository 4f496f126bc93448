"""A scorer's place in its Redis consumer group: create the group, read this consumer's own
pending entries, claim (XAUTOCLAIM) what dead consumers left once idle for ``min_idle_ms``,
count deliveries, remove consumers that left without saying goodbye, and leave.

The scoring loop (:mod:`ctcd.streaming.scorer`) decides what to do with the entries; this
module only keeps the group tidy and never drops an entry a consumer still holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis

from ctcd.streaming.messages import Fields
from ctcd.streaming.settings import ScorerSettings, heartbeat_key

log = logging.getLogger("ctcd.streaming")

Entry = tuple[str, Fields | None]
# Remove a consumer from its group only if it holds no pending entry (atomically: DELCONSUMER
# would drop the entries it held).
_LEAVE_IF_IDLE = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""


class Group:
    def __init__(self, settings: ScorerSettings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.claimed = 0  # entries claimed from other consumers so far
        self._cursor = "0-0"
        self._next_claim = 0.0
        self._next_prune = 0.0

    def ensure(self) -> None:
        s = self.settings
        try:
            self.redis.xgroup_create(s.stream, s.group, id=s.start_id, mkstream=True)
            log.info("created consumer group %s on %s at %s", s.group, s.stream, s.start_id)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def own_pending(self, after: str) -> list[Entry]:
        """This consumer's pending entries after id ``after`` (``"0"``: from the start)."""
        s = self.settings
        return entries(self.redis.xreadgroup(s.group, s.consumer, {s.stream: after},
                                             count=s.batch_size))

    def claim_due(self) -> bool:
        """A claim pass is under way (more to page through) or the next one is due."""
        return self._cursor != "0-0" or time.monotonic() >= self._next_claim

    def claim(self) -> list[Entry]:
        """Entries idle for over ``min_idle_ms`` in any consumer, now this one's. A finished
        pass also removes departed consumers, at most every ``min_idle_ms`` (5 s or more)."""
        s = self.settings
        reply = self.redis.xautoclaim(s.stream, s.group, s.consumer, min_idle_time=s.min_idle_ms,
                                      start_id=self._cursor, count=s.batch_size)
        self._cursor, claimed = text(reply[0]), reply[1]
        if self._cursor == "0-0":
            now = time.monotonic()
            self._next_claim = now + max(s.min_idle_ms / 4000, 0.5)
            if now >= self._next_prune:
                self._next_prune = now + max(s.min_idle_ms / 1000, 5.0)
                self.prune_departed()
        found = [(text(i), f) for i, f in claimed]
        if found:
            self.claimed += len(found)
            log.info("claimed %d entries idle for over %d ms", len(found), s.min_idle_ms)
        return found

    def deliveries(self, ids: Sequence[str]) -> dict[str, int]:
        """How many times each entry was delivered (to any consumer)."""
        s = self.settings
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(s.stream, s.group, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for found in pipe.execute():
            for item in found:
                counts[text(item["message_id"])] = int(item["times_delivered"])
        return counts

    def prune_departed(self) -> None:
        """Remove consumers that left without saying goodbye (killed, or pods deleted by
        force) once nothing they held is pending any more (claimed and finished by the
        others): no heartbeat, idle for over ``min_idle_ms``. Removal is atomic with the
        check that the consumer holds nothing, so a consumer that read meanwhile keeps its
        entries; a live consumer removed by mistake is recreated by its next read."""
        s = self.settings
        idle = [c for c in self.redis.xinfo_consumers(s.stream, s.group)
                if int(c["pending"]) == 0 and int(c["idle"]) > s.min_idle_ms]
        names = [text(c["name"]) for c in idle if text(c["name"]) != s.consumer]
        if not names:
            return
        beating = self.redis.pipeline(transaction=False)
        for name in names:
            beating.exists(heartbeat_key(s.stream, s.group, name))
        for name, alive in zip(names, beating.execute(), strict=True):
            if not alive and self.leave_if_idle(name):
                log.info("removed departed consumer %s from group %s (no heartbeat, nothing "
                         "pending)", name, s.group)

    def leave_if_idle(self, consumer: str) -> bool:
        """Remove ``consumer`` from the group unless it holds pending entries."""
        s = self.settings
        return bool(self.redis.eval(_LEAVE_IF_IDLE, 1, s.stream, s.group, consumer) != -1)


def entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply for one stream -> [(id, fields or None)]."""
    if not reply:
        return []
    _name, found = reply[0]
    return [(text(i), f or None) for i, f in found]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

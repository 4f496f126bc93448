"""Admin operations (list, load, split traffic, unload, shadow) over all workers of a server.

A transport checks the caller and parses the body; this applies the change on the local
:class:`~ctcd.serving.handlers.ModelServer` and, with ``--workers N``, repeats it on
every other worker (:class:`~ctcd.serving.workers.Peers`). If a peer refuses, the change
is undone where it was made, so all workers hold the same versions and weights. A call
that comes from another worker (``internal``) is applied here only.
"""

from __future__ import annotations

from typing import Any

from ctcd.serving.comparison import merge_states
from ctcd.serving.errors import InvalidInput
from ctcd.serving.handlers import ModelServer
from ctcd.serving.workers import Peers, merge_versions

AdminResult = tuple[int, dict[str, Any]]  # (HTTP status, JSON body)


class Admin:
    def __init__(self, server: ModelServer, peers: Peers | None = None) -> None:
        self.server = server
        self.peers = peers

    def _fan_out(self, internal: bool) -> Peers | None:
        return None if internal else self.peers

    async def list_versions(self, *, internal: bool = False) -> AdminResult:
        described = self.server.registry.describe()
        peers = self._fan_out(internal)
        if peers is not None:
            others = [b for _, status, b in await peers.call("GET", "/admin/versions")
                      if status == 200]
            described = merge_versions(described, others)
        return 200, described

    async def add_version(self, doc: dict[str, Any], *, internal: bool = False) -> AdminResult:
        unknown = sorted(set(doc) - {"model_uri", "version"})
        if unknown:
            raise InvalidInput(unknown[0], "is not a field; send {model_uri, version}")
        uri, version = doc.get("model_uri"), _text(doc, "version")
        status, entry = await self.server.add_version(uri, version)
        peers = self._fan_out(internal)
        if peers is not None:
            results = await peers.call("POST", "/admin/versions",
                                       {"model_uri": uri, "version": version})
            failed = [r for r in results if r[1] >= 300]
            if failed:
                added = [url for url, code, _ in results if code == 201]
                await peers.call("DELETE", f"/admin/versions/{version}", urls=added)
                if status == 201:
                    await self.server.remove_version(version)
                return _peer_failure(failed)
        return status, entry

    async def set_traffic(self, doc: dict[str, Any], *, internal: bool = False) -> AdminResult:
        unknown = sorted(set(doc) - {"weights"})
        if unknown or "weights" not in doc:
            raise InvalidInput(unknown[0] if unknown else "weights",
                               "is not a field; send {\"weights\": {version: weight}}"
                               if unknown else "is required: {\"weights\": {version: weight}}")
        before = {s.version: s.weight for s in self.server.registry.slots if s.weight > 0}
        described = await self.server.set_traffic(doc["weights"])
        peers = self._fan_out(internal)
        if peers is not None:
            results = await peers.call("PUT", "/admin/traffic", doc)
            failed = [r for r in results if r[1] >= 300]
            if failed:
                changed = [url for url, code, _ in results if code < 300]
                await peers.call("PUT", "/admin/traffic", {"weights": before}, urls=changed)
                await self.server.set_traffic(before)
                return _peer_failure(failed)
        return 200, described

    async def remove_version(self, version: str, *, internal: bool = False) -> AdminResult:
        described = await self.server.remove_version(version)
        peers = self._fan_out(internal)
        if peers is not None:
            results = await peers.call("DELETE", f"/admin/versions/{version}")
            failed = [r for r in results if r[1] >= 300 and r[1] != 404]
            if failed:
                url, status, answer = failed[0]
                return 502, {"error": f"unloaded here, but worker {url} answered "
                             f"{status}: {answer}"}
        return 200, described


    async def shadow_state(self, samples: int, *, internal: bool = False) -> AdminResult:
        own = self.server.shadow_state(samples)
        peers = self._fan_out(internal)
        if peers is not None and own["shadow"] is not None:
            others = [b.get("shadow") for _, status, b in
                      await peers.call("GET", f"/admin/shadow?samples={samples}")
                      if status == 200]
            own = {**own, "shadow": merge_states(own["shadow"], others, samples)}
        return 200, own

    async def start_shadow(self, doc: dict[str, Any], *, internal: bool = False) -> AdminResult:
        was_running = self.server.shadow is not None
        await self.server.start_shadow(doc)
        peers = self._fan_out(internal)
        if peers is not None:
            results = await peers.call("PUT", "/admin/shadow", doc)
            failed = [r for r in results if r[1] >= 300]
            if failed:
                started = [url for url, code, _ in results if code < 300]
                await peers.call("DELETE", "/admin/shadow", urls=started)
                if not was_running:
                    await self.server.stop_shadow()
                return _peer_failure(failed)
        return await self.shadow_state(20, internal=internal)

    async def stop_shadow(self, *, internal: bool = False) -> AdminResult:
        final = await self.server.stop_shadow()
        peers = self._fan_out(internal)
        if peers is not None and final["shadow"] is not None:
            ended = [b.get("shadow") for _, status, b in
                     await peers.call("DELETE", "/admin/shadow") if status == 200]
            final = {**final, "shadow": merge_states(final["shadow"], ended, 20)}
        return 200, final


def _peer_failure(failed: list[tuple[str, int, Any]]) -> AdminResult:
    url, status, answer = failed[0]
    reason = answer.get("error") if isinstance(answer, dict) else answer
    return (status if 400 <= status < 599 else 502,
            {"error": f"worker {url} refused the change ({status}: {reason}); the change "
             "was undone"})


def _text(doc: dict[str, Any], key: str) -> Any:
    value = doc.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # {"version": 2} is a common, harmless slip
    return value

"""A small client of the Airflow 3 REST API (v2), as a user or a script would use it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

TERMINAL = {"success", "failed"}
IDEMPOTENT = frozenset({"GET", "PATCH", "PUT", "DELETE"})  # sent again when the database was locked
LOCKED_RETRY_S = (1.0, 3.0)  # the waits before the second and third tries


class AirflowApiError(RuntimeError):
    pass


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    def token(self) -> str:
        response = self._http.post("/auth/token", json=self._credentials)
        if response.status_code != 201:
            raise AirflowApiError(
                f"POST /auth/token answered {response.status_code}: {response.text}"
            )
        self._token = str(response.json()["access_token"])
        return self._token

    def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        if self._token is None:
            self.token()
        response = self._send(method, path, headers, **kwargs)
        for wait in LOCKED_RETRY_S:
            # Airflow on SQLite answers 500 "Database error" when its database stayed locked
            # past the busy timeout (several tasks writing at once): the same request again
            if (method not in IDEMPOTENT or response.status_code != 500
                    or "Database error" not in response.text):
                break
            time.sleep(wait)
            response = self._send(method, path, headers, **kwargs)
        return response

    def _send(self, method: str, path: str, headers: Mapping[str, str] | None,
              **kwargs: Any) -> httpx.Response:
        for attempt in range(2):
            merged = {**(headers or {}), "Authorization": f"Bearer {self._token}"}
            response = self._http.request(method, f"/api/v2{path}", headers=merged, **kwargs)
            if response.status_code != 401 or attempt:
                return response
            self.token()  # the token expired: one fresh try
        return response

    def _json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code not in ok:
            raise AirflowApiError(
                f"{method} {path} answered {response.status_code}: {response.text}"
            )
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = self.request("GET", f"/dags/{dag_id}")
            if response.status_code == 200:
                return dict(response.json())
            if time.monotonic() > deadline:
                raise AirflowApiError(
                    f"DAG {dag_id} was not parsed within {timeout:.0f}s "
                    f"(last answer {response.status_code}); check the dag-processor log"
                )
            time.sleep(2)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._json("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body = {"logical_date": None, "conf": dict(conf or {})}
        return dict(self._json("POST", f"/dags/{dag_id}/dagRuns", json=body))

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self._json("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(data["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._json("GET", path, params={"stringify": "false"})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self._json("GET", path, headers={"Accept": "application/json"})["content"]
        return "\n".join(
            json.dumps(line) if isinstance(line, dict) else str(line) for line in content
        )

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float = 1800.0,
        on_progress: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the run ends; ``on_progress`` gets {task_id: state} whenever it changes."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            run = self.dag_run(dag_id, run_id)
            if on_progress is not None:
                states = {
                    ti["task_id"]: ti["state"] or "none"
                    for ti in self.task_instances(dag_id, run_id)
                }
                if states != seen:
                    seen = states
                    on_progress(states)
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                states = {ti["task_id"]: ti["state"] or "none"
                          for ti in self.task_instances(dag_id, run_id)}
                waiting = ", ".join(f"{task} {state}" for task, state in states.items()
                                    if state not in ("success", "skipped", "failed"))
                raise AirflowApiError(
                    f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s "
                    f"(not done: {waiting or 'none'})"
                )
            time.sleep(2)

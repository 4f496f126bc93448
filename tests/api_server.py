"""The session's Airflow API server as the tests see it (the fixture is ``api_server`` in
conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

API_USERS = {"admin": "admin", "viewer": "viewer"}


@dataclass(frozen=True)
class ApiServer:
    """``airflow api-server`` on the session's metadata DB, with the plugin loaded; its
    users are Airflow's own (simple auth manager): ``admin`` and the read-only ``viewer``."""

    url: str
    ctcd_home: Path  # the CTCD_HOME the server's plugin reads (the deployments it lists)

    def token(self, user: str = "admin") -> str:
        response = httpx.post(f"{self.url}/auth/token",
                              json={"username": user, "password": API_USERS[user]})
        assert response.status_code == 201, response.text
        return str(response.json()["access_token"])

    def headers(self, user: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

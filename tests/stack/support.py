"""Helpers shared by the stack tests (importable, not fixtures)."""

from __future__ import annotations

from pathlib import Path

from ctcd.settings import Settings


def stop_model_servers(home: Path) -> None:
    """Delete every model server the local deployer started under ``home``."""
    from ctcd.deployers.local.deployer import LocalDeployer

    deployer = LocalDeployer(Settings(home=home))
    for handle in deployer.find_model_server():
        deployer.delete_model_server(handle.service_id, timeout=30, force=True)

"""Choosing a deployer backend from configuration (``CTCD_DEPLOYER``)."""

from __future__ import annotations

import importlib

from ctcd.deployers.base import ModelDeployer
from ctcd.errors import InvalidDeployer
from ctcd.settings import Settings, get_settings

BUILTIN = ("local",)


def get_deployer(name: str | None = None, *, settings: Settings | None = None) -> ModelDeployer:
    """The configured model deployer.

    ``name`` (default: ``CTCD_DEPLOYER``, itself defaulting to ``local``) is ``local`` or a
    dotted path ``package.module:Class`` to a user-supplied backend. Such a class is called
    with one keyword argument, ``settings`` (:class:`ctcd.settings.Settings`), and must
    satisfy :class:`ctcd.deployers.ModelDeployer`. Handles remember the name that made them
    (``ServiceHandle.backend``), so ``get_deployer(handle.backend)`` finds the same backend.
    """
    settings = settings or get_settings()
    name = (name or settings.deployer).strip()
    if name == "local":
        from ctcd.deployers.local import LocalDeployer

        return LocalDeployer(settings)
    if ":" not in name:
        raise InvalidDeployer(
            f"CTCD_DEPLOYER={name!r} is not a known backend; use one of {list(BUILTIN)} or a "
            "dotted path `package.module:Class` to your own (see docs/deployers.md)"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidDeployer(
            f"CTCD_DEPLOYER={name!r}: cannot import {module_name!r} ({err}); is it on the "
            "Python path of every Airflow worker?"
        ) from err
    cls = getattr(module, attr, None)
    if cls is None:
        raise InvalidDeployer(f"CTCD_DEPLOYER={name!r}: {module_name} has no attribute {attr!r}")
    deployer = cls(settings=settings)
    if not isinstance(deployer, ModelDeployer):
        raise InvalidDeployer(
            f"CTCD_DEPLOYER={name!r}: {cls!r} lacks methods of ctcd.deployers.ModelDeployer "
            "(deploy_model, find_model_server, start/stop/delete_model_server, get_logs)"
        )
    deployer.name = name  # handles record the exact name, so they find this backend again
    return deployer

"""Choosing a deployer backend from configuration (``CTCD_DEPLOYER``)."""

from __future__ import annotations

import importlib

from ctcd.deployers.base import ModelDeployer
from ctcd.errors import InvalidDeployer, InvalidParams, ModelServerNotFound
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
            "dotted path `package.module:Class` to your own (see ctcd/deployers/base.py)"
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
            "(deploy_model, find_model_server, status, describe_model_server, "
            "start/stop/delete_model_server, get_logs); see ctcd/deployers/base.py"
        )
    deployer.name = name  # handles record the exact name, so they find this backend again
    return deployer


def resolve_service(
    deployer: ModelDeployer, service: str | None = None, model_name: str | None = None
) -> str:
    """The service id named by ``service`` (id, unique id prefix or server name) or, failing
    that, of the one server of ``model_name``."""
    if service:
        found = deployer.find_model_server()
        exact = [h for h in found if service in (h.service_id, h.server_name)]
        prefixed = [h for h in found if len(service) >= 4 and h.service_id.startswith(service)]
        matches = exact or prefixed
        if len(matches) == 1:
            return matches[0].service_id
        if not matches:
            raise ModelServerNotFound(f"service id or name {service!r}")
        raise InvalidParams(f"{service!r} matches several model servers; give more of the id")
    if not model_name:
        raise InvalidParams("name a model server: give a service id or name, or a model name")
    by_model = deployer.find_model_server(model_name=model_name)
    if not by_model:
        raise ModelServerNotFound(f"model name {model_name!r}")
    if len(by_model) > 1:
        names = ", ".join(f"{h.server_name} ({h.service_id[:8]})" for h in by_model)
        raise InvalidParams(f"model {model_name!r} has several servers ({names}); name one")
    return by_model[0].service_id

"""Run parameters as pydantic models, two uses each (training, batch and monitoring share
these helpers; they live here, below all three):

- ``airflow_params(model, defaults)`` turns a model into typed Airflow ``Param``s (JSON
  schema per field), so the UI trigger form shows typed fields and the REST API rejects a
  bad value with a 400. ``defaults`` are a model file's values for this model's DAG.
- ``validate_params(model, conf, what)`` re-checks a run's whole ``conf`` inside a task,
  which also catches what Airflow lets through (unknown keys, runs created without the
  API's validation), and names the parameter at fault.

Imported when Airflow parses DAG files: pydantic only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ctcd.errors import InvalidParams

M = TypeVar("M", bound=BaseModel)


def problems_of(err: ValidationError, *, prefix: str = "parameter") -> list[str]:
    """One readable line per problem of a pydantic error, naming the field at fault."""
    problems = []
    for error in err.errors():
        name = ".".join(str(part) for part in error["loc"])
        if not name:  # a whole-model check; its message starts with the field's name
            problems.append(str(error["msg"]).removeprefix("Value error, "))
        elif error["type"] == "extra_forbidden":
            problems.append(f"unknown {prefix} '{name}'")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            shown = f" (got {error['input']!r})" if "input" in error else ""
            if isinstance(error.get("input"), dict):
                shown = ""
            problems.append(f"{prefix} '{name}': {message}{shown}")
    return problems


def validate_params(model: type[M], conf: Mapping[str, Any], what: str) -> M:
    """``conf`` as ``model``; else InvalidParams naming each bad parameter (``what``: whose
    configuration, for the message) and listing the valid ones."""
    try:
        return model.model_validate(dict(conf))
    except ValidationError as err:
        allowed = ", ".join(model.model_fields)
        raise InvalidParams(
            f"Invalid {what} configuration: " + "; ".join(problems_of(err))
            + f". Valid parameters: {allowed}."
        ) from None


def airflow_params(
    model: type[BaseModel], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Typed Airflow Params (JSON schema per field) built from a pydantic model; a field's
    default is ``defaults[name]`` when given, else the model's own."""
    from airflow.sdk import Param

    schema = model.model_json_schema()
    given = dict(defaults or {})
    unknown = sorted(set(given) - set(model.model_fields))
    if unknown:
        raise InvalidParams(f"{model.__name__} has no parameter(s) {unknown}")
    params: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        prop = dict(schema["properties"][name])
        default = given[name] if name in given else field.get_default(call_default_factory=True)
        if isinstance(default, date):
            default = default.isoformat()
        elif isinstance(default, list):
            default = [d.isoformat() if isinstance(d, date) else d for d in default]
        prop.pop("default", None)
        any_of = prop.pop("anyOf", None)
        if any_of:
            types = [option.get("type") for option in any_of]
            formats = [option["format"] for option in any_of if "format" in option]
            prop["type"] = types
            if formats:
                prop["format"] = formats[0]
        if "const" in prop:
            prop["enum"] = [prop.pop("const")]
        params[name] = Param(default, **prop)
    return params

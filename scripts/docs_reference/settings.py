"""Every settings class (pydantic-settings) of the library, as environment variables: the
modules under plugins/ that define one are found by their source, so a new settings class is
listed without touching this file."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic_settings import BaseSettings

from scripts.docs_reference.render import (
    ROOT,
    annotation_text,
    field_constraints,
    field_default,
    header,
    table,
)


def settings_classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        if "BaseSettings" not in path.read_text():
            continue
        module = importlib.import_module(
            ".".join(path.with_suffix("").relative_to(ROOT / "plugins").parts))
        found += [value for value in vars(module).values()
                  if isinstance(value, type) and issubclass(value, BaseSettings)
                  and value is not BaseSettings and value.__module__ == module.__name__]
    # the project's own settings first, then by prefix
    return sorted(found, key=lambda cls: (len(cls.model_config.get("env_prefix", "")),
                                          cls.model_config.get("env_prefix", ""), cls.__name__))


def _variable(cls: type[BaseSettings], name: str, field: Any) -> str:
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def page() -> str:
    text = header("the pydantic-settings classes under plugins/")
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        doc = " ".join((cls.__doc__ or "").split())
        text += (f"\n## `{prefix}*`: `{cls.__module__}.{cls.__name__}` "
                 f"{{ #{cls.__name__.lower()} }}\n\n")
        if doc:
            text += f"{doc}\n\n"
        rows = []
        for name, field in cls.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
                continue  # a nested settings class is listed on its own
            rows.append((f"`{_variable(cls, name, field)}`", annotation_text(field.annotation),
                         field_default(field), field_constraints(field),
                         field.description or ""))
        text += table(("variable", "type", "default", "allowed", "description"), rows)
    return text

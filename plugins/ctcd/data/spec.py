"""Data set specs: one YAML file per data set describes its columns, types, ranges,
categories, nulls, label and row-count bounds. Everything that needs to know a data set's
shape (training, validation, the serving example, batch scoring, monitoring) reads it here
instead of keeping its own constants.

Specs live in ``CTCD_DATASETS_DIR`` (default ``include/datasets``) as ``<name>.yaml``;
``load_spec`` also takes a path. Importing this module is cheap (pydantic and yaml only),
so DAG files may use it at parse time.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctcd.errors import InvalidParams

FeatureType = Literal["integer", "float", "category"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    name: str = Field(min_length=1, description="Column name.")
    type: FeatureType = Field(description="integer, float or category (strings).")
    min: float | None = Field(default=None, description="Smallest allowed value (numeric).")
    max: float | None = Field(default=None, description="Largest allowed value (numeric).")
    categories: tuple[str, ...] | None = Field(
        default=None, description="Allowed values (category); anything else is invalid."
    )
    max_null_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of nulls tolerated (0: none)."
    )
    description: str = ""

    @property
    def is_numeric(self) -> bool:
        return self.type != "category"

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type == "category":
            if not self.categories:
                raise ValueError(f"feature {self.name!r}: a category needs `categories`")
            if self.min is not None or self.max is not None:
                raise ValueError(f"feature {self.name!r}: a category takes no min/max")
        elif self.categories is not None:
            raise ValueError(f"feature {self.name!r}: a numeric feature takes no categories")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} > max {self.max}")
        return self


class LabelSpec(_Strict):
    """The label: ``classes`` for a classifier (two: binary; more: multiclass), or a number
    (no ``classes``; optionally ``min``/``max``) for a regression."""

    name: str = Field(min_length=1)
    classes: tuple[int | str, ...] | None = Field(
        default=None, min_length=2, description="Allowed label values (classifiers).")
    min_class_share: float = Field(
        default=0.0, ge=0.0, lt=0.5, description="Each class must make up at least this share."
    )
    min: float | None = Field(default=None, description="Smallest label value (regression).")
    max: float | None = Field(default=None, description="Largest label value (regression).")

    @model_validator(mode="after")
    def _one_kind(self) -> LabelSpec:
        if self.classes is not None:
            if self.min is not None or self.max is not None:
                raise ValueError(f"label {self.name!r}: a label with classes takes no min/max")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"label {self.name!r}: classes repeat")
        elif self.min_class_share:
            raise ValueError(f"label {self.name!r}: min_class_share needs classes")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"label {self.name!r}: min {self.min} > max {self.max}")
        return self

    @property
    def is_numeric(self) -> bool:
        """A regression target (no classes)."""
        return self.classes is None


class RowBounds(_Strict):
    min: int = Field(default=1, ge=0)
    max: int | None = Field(default=None, ge=1)


class Freshness(_Strict):
    max_age_days: int | None = Field(
        default=None, ge=0, description="A partition older than this (by its date) is stale."
    )


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Data set name (Asset, paths).")
    description: str = ""
    id_column: str = Field(description="Unique row id; never a feature.")
    partition_column: str | None = Field(
        default=None, description="Column holding the partition's date, if the rows carry it."
    )
    label: LabelSpec
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    rows: RowBounds = RowBounds()
    freshness: Freshness = Freshness()

    @model_validator(mode="after")
    def _unique_columns(self) -> DatasetSpec:
        names = [self.id_column, self.label.name, *(f.name for f in self.features)]
        if self.partition_column:
            names.append(self.partition_column)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"column names used twice: {dupes}")
        return self

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @cached_property
    def numeric_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.is_numeric)

    @cached_property
    def categorical_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if not f.is_numeric)

    @cached_property
    def categories(self) -> dict[str, tuple[str, ...]]:
        return {f.name: f.categories for f in self.features if f.categories is not None}

    @cached_property
    def columns(self) -> tuple[str, ...]:
        """Every column a labelled partition has: id, partition date, features, label."""
        head = (self.id_column,) + ((self.partition_column,) if self.partition_column else ())
        return (*head, *self.feature_names, self.label.name)

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"data set {self.name!r} has no feature {name!r}")


def datasets_dir() -> Path:
    from ctcd.settings import get_settings

    return get_settings().datasets_dir


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """The spec named ``name`` (``<datasets_dir>/<name>.yaml``) or at a path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        path = datasets_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in datasets_dir().glob("*.y*ml"))
        raise InvalidParams(
            f"No data set spec {name_or_path!r} (looked for {path}). Known data sets: "
            f"{known}. Write a spec there (see include/datasets/churn.yaml)."
        )
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InvalidParams(f"Data set spec {path} is not valid YAML: {err}") from err
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in err.errors()
        )
        raise InvalidParams(f"Data set spec {path} is invalid: {problems}") from err

"""Finding and reading model files, with errors that name the file, the line and the field.

``load_model("churn")`` reads ``<models_dir>/churn.yaml`` (``CTCD_MODELS_DIR``, default
``include/models``), checks it against its data set spec (the spec exists; the task fits
the label) and returns the :class:`ModelDefinition` with its task resolved.
``load_models()`` reads every file of the folder and keeps the good ones apart from the
broken ones, so one broken file never hides the other models' DAGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ctcd.errors import InvalidParams
from ctcd.models.definition import ModelDefinition
from ctcd.models.tasks import Task, metric
from ctcd.params import problems_of


class InvalidModelFile(InvalidParams):
    """A model file is missing, unreadable or describes no valid model."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        super().__init__(f"Model file {path} is invalid: "
                         + "; ".join(p.rstrip(". ") for p in problems)
                         + ". See include/models/churn.yaml and the model file reference.")
        self.path = path
        self.problems = list(problems)


class BrokenModelFiles(InvalidParams):
    """Some model files are broken: their models have no DAGs until they are fixed."""

    def __init__(self, errors: dict[str, str]) -> None:
        listed = "\n".join(f"- {message}" for message in errors.values())
        super().__init__(f"{len(errors)} model file(s) could not be read, so their DAGs are "
                         f"missing (the other models' DAGs are unaffected):\n{listed}")
        self.errors = dict(errors)


@dataclass(frozen=True)
class LoadedModels:
    models: dict[str, ModelDefinition] = field(default_factory=dict)  # by key (file name)
    errors: dict[str, str] = field(default_factory=dict)  # file -> message


def models_dir() -> Path:
    from ctcd.settings import get_settings

    return get_settings().models_dir


def model_files(directory: Path | None = None) -> list[Path]:
    folder = directory or models_dir()
    return sorted(p for p in folder.glob("*.y*ml") if not p.name.startswith((".", "_")))


def load_model(key_or_path: str | Path) -> ModelDefinition:
    """The model file ``<models_dir>/<key>.yaml`` (or at a path), checked and resolved."""
    path = Path(key_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = models_dir() / f"{key_or_path}.yaml"
    if not path.is_file():
        known = [p.stem for p in model_files(path.parent)] if path.parent.is_dir() else []
        raise InvalidParams(f"No model file {str(key_or_path)!r} (looked for {path}). Known "
                            f"models: {known}. Add one under {path.parent}.")
    return _resolve(parse_model_file(path), path)


def load_models(directory: Path | None = None) -> LoadedModels:
    """Every model file of ``directory``; broken ones (and every file of a registered name
    used twice) land in ``errors`` with their message instead of raising."""
    models: dict[str, ModelDefinition] = {}
    errors: dict[str, str] = {}
    for path in model_files(directory):
        try:
            models[path.stem] = _resolve(parse_model_file(path), path)
        except InvalidParams as err:
            errors[str(path)] = err.message
    by_name: dict[str, list[str]] = {}
    for key, model in models.items():
        by_name.setdefault(model.model_name, []).append(key)
    for name, keys in by_name.items():
        if len(keys) > 1:
            for key in keys:
                found = models.pop(key).path or Path(f"{key}.yaml")
                others = [k for k in keys if k != key]
                errors[str(found)] = str(InvalidModelFile(found, [
                    f"name: the registered model name {name!r} is also used by "
                    f"{', '.join(f'{k}.yaml' for k in others)}; each model file needs a name "
                    "of its own (set `name:`)"]).message)
    return LoadedModels(models, errors)


def parse_model_file(path: Path) -> ModelDefinition:
    """Parse and validate one file (not yet checked against its data set)."""
    try:
        text = path.read_text()
        raw: Any = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidModelFile(path, [f"cannot read it ({err})"]) from err
    except yaml.YAMLError as err:
        raise InvalidModelFile(path, [f"not valid YAML: {err}"]) from err
    if not isinstance(raw, dict):
        raise InvalidModelFile(path, ["it must hold a mapping (e.g. `dataset: churn`)"])
    try:
        definition = ModelDefinition.model_validate(raw)
    except ValidationError as err:
        problems = problems_of(err, prefix="field")
        lines = [_line_of(text, error["loc"] or _named_path(problem))
                 for error, problem in zip(err.errors(), problems, strict=True)]
        raise InvalidModelFile(path, [
            f"line {line}, {problem}" if line else problem
            for problem, line in zip(problems, lines, strict=True)
        ]) from None
    key = path.stem
    if not key.replace("-", "").replace("_", "").isalnum():
        raise InvalidModelFile(path, [f"the file name {key!r} names the model's DAGs: use "
                                      "letters, digits, - and _ only"])
    return definition.attach(key, path, definition.task)


def _resolve(definition: ModelDefinition, path: Path) -> ModelDefinition:
    """Check the definition against its data set spec; resolve its task."""
    from ctcd.data.spec import load_spec

    try:
        spec = load_spec(definition.dataset)
    except InvalidParams as err:
        raise InvalidModelFile(path, [f"dataset: {err.message}"]) from None
    task = task_for(definition.task, spec.label.classes, path)
    resolved = definition.attach(path.stem, path, task)
    text = path.read_text()
    try:
        metric(task, resolved.gate_metric)
    except ValueError as err:
        line = _line_of(text, ("gate", "metric"))
        raise InvalidModelFile(path, [f"line {line}, gate.metric: {err}"]) from None
    problems = _section_params(resolved, text)
    if problems:
        raise InvalidModelFile(path, problems)
    if task == "regression" and resolved.trainer.estimator == "logistic_regression":
        line = _line_of(text, ("trainer", "estimator"))
        raise InvalidModelFile(path, [f"line {line}, trainer.estimator: logistic_regression is "
                                      "a classifier; a regression model needs a regressor "
                                      "(e.g. ridge)"])
    return resolved


def _section_params(model: ModelDefinition, text: str) -> list[str]:
    """The ``batch.params`` and ``monitoring.params`` checked against their DAGs' Params."""
    from pydantic import BaseModel

    from ctcd.batch.params import BatchInferenceParams
    from ctcd.monitoring.params import MonitoringParams

    checks: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
        ("batch", BatchInferenceParams, dict(model.batch.params)),
        ("monitoring", MonitoringParams, dict(model.monitoring.params)),
    ]
    problems = []
    for section, params_model, given in checks:
        try:
            params_model.model_validate(given)
        except ValidationError as err:
            for error, problem in zip(err.errors(), problems_of(err, prefix="field"),
                                      strict=True):
                loc = (section, "params", *error["loc"])
                line = _line_of(text, loc)
                problem = problem.replace("field '", f"field '{section}.params.", 1)
                problems.append(f"line {line}, {problem}" if line else problem)
    return problems


def task_for(task: Task | None, classes: Sequence[Any] | None, path: Path) -> Task:
    """The task a label implies, or a clear error when the file's task does not fit it."""
    implied: Task = ("regression" if not classes
                     else "binary" if len(classes) == 2 else "multiclass")
    if task is None or task == implied:
        return implied
    if task == "regression":
        why = (f"its data set's label has classes {list(classes or [])}: a regression model "
               "needs a numeric label without `classes` (give it `min`/`max` instead)")
    elif implied == "regression":
        why = ("its data set's label has no `classes`, so it is a number: a classifier needs "
               "the label's `classes` in the data set spec")
    else:
        why = (f"its data set's label has {len(classes or [])} classes, which makes it "
               f"{implied}")
    raise InvalidModelFile(path, [f"task: {task!r} does not fit: {why}"])


def _named_path(problem: str) -> tuple[str, ...]:
    """The field a whole-model check names first (``gate.metric: ...``)."""
    head, colon, _ = problem.partition(":")
    if colon and head and all(part.isidentifier() for part in head.split(".")):
        return tuple(head.split("."))
    return ()


def _line_of(text: str, loc: Sequence[Any]) -> int | None:
    """The line (1-based) of the field at ``loc`` in the YAML ``text``, or of its nearest
    parent present (an unknown or missing key reports its mapping)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((value for key, value in node.value if key.value == str(part)), None)
            key_node = next((key for key, value in node.value if key.value == str(part)), None)
            if found is None:
                break
            line = key_node.start_mark.line + 1 if key_node is not None else line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(
                node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    if line is None and node is not None:
        line = node.start_mark.line + 1
    return line

"""Model files: one YAML file per model under ``include/models/`` (its data set, task,
trainer, gate, deployment, schedule, monitoring and batch settings); the DAGs of each model
are generated from it."""

from ctcd.models.definition import ModelDefinition
from ctcd.models.files import InvalidModelFile, LoadedModels, load_model, load_models
from ctcd.models.tasks import METRICS, Task

__all__ = [
    "METRICS",
    "InvalidModelFile",
    "LoadedModels",
    "ModelDefinition",
    "Task",
    "load_model",
    "load_models",
]

"""The file formats users write, from the pydantic models that read them."""

from __future__ import annotations

import importlib

from scripts.docs_reference.render import header, model_tables, table

# (title, where the files live, the model that reads one). A format whose module is not in
# the library yet is left out, so the page follows the code as it lands.
FORMATS = (
    ("Data set spec", "include/datasets/<name>.yaml", "ctcd.data.spec:DatasetSpec"),
    ("Model file", "include/models/<name>.yaml", "ctcd.models.definition:ModelDefinition"),
)


def page() -> str:
    text = header("the pydantic models that read include/ files")
    for title, where, target in FORMATS:
        module_name, _, name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue
            raise
        model = getattr(module, name)
        doc = (model.__doc__ or "").strip()
        text += f"\n## {title}: `{where}`\n\nRead by `{module_name}.{name}`.\n\n"
        text += (f"{doc}\n\n" if doc else "") + model_tables(model)
    return text + metrics()


def metrics() -> str:
    """The gate's metrics of each task (``ctcd.models.tasks.METRICS``)."""
    try:
        from ctcd.models.tasks import DEFAULT_METRIC, LIVE_METRIC, METRICS
    except ModuleNotFoundError:
        return ""
    rows = [
        (task, f"`{m.name}`" + (" (default)" if m.name == DEFAULT_METRIC[task] else ""),
         "higher" if m.greater_is_better else "lower", f"`{m.mlflow_key}`",
         "yes" if m.needs_proba else "", m.description)
        for task, metrics in METRICS.items() for m in metrics.values()
    ]
    live = ", ".join(f"{task}: `{name}`" for task, name in LIVE_METRIC.items())
    return ("\n## Metrics by task\n\nWhat a model file's `gate.metric` may name, computed on "
            "the holdout by `mlflow.models.evaluate` (logged to the training run as "
            "`holdout_<MLflow name>`). Monitoring computes one of them live from delayed "
            f"labels: {live}.\n\n"
            + table(("task", "metric", "better", "MLflow name", "needs probabilities",
                     "what it is"), rows))

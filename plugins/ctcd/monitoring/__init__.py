"""Watching served traffic: reference statistics logged at training time, drift measures
against them, drift reports, and the Airflow-free monitoring check the
``model_monitoring`` DAG runs.

- ``reference``: per-feature and prediction statistics of the training data, logged with
  the model as ``reference/statistics.json``.
- ``served``: the model server's sampled request log, decoded into feature rows.
- ``labels``: delayed ground truth keyed by a row id, for live accuracy.
- ``drift``: PSI, KS and Wasserstein per feature, thresholds, an overall verdict.
- ``report``: the table, the plot and the HTML page, on disk and in MLflow.
- ``pipeline``: one check from request log to decision.
"""

"""The diabetes model's trainer: a LightGBM regressor, with a validation split of its own
for early stopping.

A trainer gets the training rows' features ``X`` (the data set spec's feature columns, as
the served model will receive them), their label ``y``, the run's ``params`` (the model
file's ``trainer.hyperparameters`` with the run's overrides, plus ``seed`` and ``task``)
and the data set ``spec``; it returns a fitted model. The project logs it with the MLflow
flavor that fits (here ``lightgbm``), evaluates it on the holdout it kept apart, and
deploys it when it passes the model file's gate.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import pandas as pd
from sklearn.model_selection import train_test_split

from ctcd.data.spec import DatasetSpec


def train(X: pd.DataFrame, y: pd.Series, params: dict[str, Any],
          spec: DatasetSpec) -> lgb.LGBMRegressor:
    settings = dict(params)
    seed = int(settings.pop("seed"))
    settings.pop("task")
    rounds = int(settings.pop("early_stopping_rounds", 30))
    fit_X, early_X, fit_y, early_y = train_test_split(X, y, test_size=0.15, random_state=seed)
    model = lgb.LGBMRegressor(random_state=seed, n_jobs=1, verbose=-1, **settings)
    model.fit(fit_X, fit_y, eval_X=early_X, eval_y=early_y,
              callbacks=[lgb.early_stopping(rounds, verbose=False)])
    return model

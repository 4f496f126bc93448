"""Task logs without library noise: installed once, when a task process imports ``ctcd``.

Airflow keeps a few deprecated modules as *wildcard* redirects (``airflow.utils.timezone``
answers any attribute name, with a ``DeprecatedImportWarning``). Pickling anything whose
``__module__`` is unset (scipy's ufuncs, inside every scikit-learn model that MLflow, joblib
or cloudpickle saves or loads) makes ``pickle`` look the object's name up in *every* module
in ``sys.modules``, so each such lookup in a task that touches a model printed one warning
per ufunc: about 1,160 of the 1,175 lines of a ``verify`` log, before its own messages.

Only those lookups are silenced: a name the redirect's target does not have. A real use of a
deprecated name (``airflow.utils.timezone.utcnow`` in a user's trainer) still warns.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
import warnings
from typing import Any


def quiet_module_scans() -> int:
    """Ignore the deprecation warnings that module scans raise on Airflow's wildcard
    redirects; returns how many redirects were covered. Safe to call more than once."""
    covered = 0
    for name, module in list(sys.modules.items()):
        target = _wildcard_target(module)
        if target is None:
            continue
        try:
            real = sorted(n for n in dir(importlib.import_module(target))
                          if not n.startswith("__"))
        except ImportError:
            continue
        _ignore(name, tuple(real))
        covered += 1
    return covered


def _wildcard_target(module: Any) -> str | None:
    """The module an Airflow wildcard redirect sends every name to, if ``module`` is one."""
    getter = getattr(module, "__dict__", {}).get("__getattr__")
    if not isinstance(getter, functools.partial) or not getter.args:
        return None
    if getattr(getter.func, "__name__", "") != "getattr_with_deprecation":
        return None
    imports = getter.args[0]
    target = imports.get("*") if isinstance(imports, dict) else None
    return target if isinstance(target, str) else None


@functools.cache
def _ignore(module: str, real_names: tuple[str, ...]) -> None:
    known = "|".join(re.escape(n) for n in real_names) or "(?!)"
    # "The `airflow.utils.timezone.zetac` attribute is deprecated..." (or "is deprecated")
    warnings.filterwarnings(
        "ignore", message=rf"The `{re.escape(module)}\.(?!(?:{known})`)[^`]+` (attribute )?is "
        "deprecated")

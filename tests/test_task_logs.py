"""Library warnings stay out of task logs: a module scan (pickle looking a ufunc's name up in
every module, as saving or loading a scikit-learn model does) warns nothing, while a real use
of a deprecated Airflow name still warns. Each case runs in a fresh interpreter, as a task
process starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCAN = """
import pickle, warnings
warnings.simplefilter("always")  # every warning shown: the filter must hold against that
import airflow.sdk  # first, as in a task process: pickle's scan meets Airflow's modules
{setup}
import scipy.special  # before the module that defines the ufunc
with warnings.catch_warnings(record=True) as caught:
    pickle.dumps(scipy.special.zetac)
    import airflow.utils.timezone as deprecated
    deprecated.utcnow
print(len([w for w in caught if "zetac" in str(w.message)]))
print(len([w for w in caught if "timezone.utcnow" in str(w.message)]))
"""


def _run(setup: str, home: Path) -> tuple[int, int]:
    env = {"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin",
           "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", SCAN.format(setup=setup)], check=True,
                         capture_output=True, text=True, cwd=ROOT, env=env)
    scans, real = out.stdout.split()[-2:]  # after whatever Airflow printed
    return int(scans), int(real)


def test_without_the_filter_a_module_scan_floods_the_log(tmp_path: Path) -> None:
    scans, real = _run("", tmp_path)
    assert scans >= 3  # one per wildcard redirect of Airflow's (timezone, trigger_rule, ...)
    assert real == 1


def test_the_task_runner_listener_silences_the_scan_and_nothing_else(tmp_path: Path) -> None:
    # As a task process starts: the plugin's listeners, through Airflow's listener manager.
    setup = ("from airflow.sdk.execution_time.task_runner import TaskRunnerMarker\n"
             "from airflow.sdk.listener import get_listener_manager\n"
             "get_listener_manager().hook.on_starting(component=TaskRunnerMarker())")
    assert _run(setup, tmp_path) == (0, 1)


def test_other_components_starting_leave_warnings_alone(tmp_path: Path) -> None:
    setup = ("from ctcd import listeners\n"
             "class SchedulerMarker: pass\n"
             "listeners.on_starting(component=SchedulerMarker())")
    scans, real = _run(setup, tmp_path)
    assert scans >= 3 and real == 1

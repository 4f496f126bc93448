"""The ``ctcd`` console script.

Each command group is a Typer app in the module that owns its subject (or one command, a
function), mounted here by name; add one by adding one line to ``GROUPS``.
"""

from __future__ import annotations

import importlib

import typer

GROUPS: dict[str, str] = {
    "models": "ctcd.deployers.cli:app",
    "data": "ctcd.data.cli:app",
    "predict": "ctcd.batch.cli:predict",
    "streaming": "ctcd.streaming.cli:app",
}


def build() -> typer.Typer:
    app = typer.Typer(help="ctcd: continuous training and deployment on Airflow.",
                      no_args_is_help=True, pretty_exceptions_enable=False)
    for name, target in GROUPS.items():
        module, _, attr = target.partition(":")
        target_obj = getattr(importlib.import_module(module), attr)
        if isinstance(target_obj, typer.Typer):
            app.add_typer(target_obj, name=name)
        else:  # a single command
            app.command(name)(target_obj)
    return app


def main() -> None:
    build()()


if __name__ == "__main__":
    main()

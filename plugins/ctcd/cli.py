"""The ``ctcd`` console script.

Each command group is a Typer app in the module that owns its subject, mounted here by name;
add a group by adding one line to ``GROUPS``.
"""

from __future__ import annotations

import importlib

import typer

GROUPS: dict[str, str] = {
    "models": "ctcd.deployers.cli:app",
    "data": "ctcd.data.cli:app",
}


def build() -> typer.Typer:
    app = typer.Typer(help="ctcd: continuous training and deployment on Airflow.",
                      no_args_is_help=True, pretty_exceptions_enable=False)
    for name, target in GROUPS.items():
        module, _, attr = target.partition(":")
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)
    return app


def main() -> None:
    build()()


if __name__ == "__main__":
    main()

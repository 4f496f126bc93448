"""The reference pages generated from the code: every DAG's Params (a DagBag of dags/), the
command line (each program's --help), the settings (pydantic-settings classes), the model
server's HTTP API (its OpenAPI document) and the file formats (the pydantic models that read
them). ``python -m scripts.docs_reference`` writes them under docs/reference/generated/
(``make docs`` runs it); ``--check`` only says which are stale (a test runs it)."""

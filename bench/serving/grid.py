"""The benchmark's grid: the models, protocols, concurrencies and request sizes of its
cells, and how a cell is named in the figures."""

from __future__ import annotations

KINDS = ("random_forest", "churn", "xgboost", "lightgbm")
NUMERIC_KINDS = ("random_forest", "xgboost", "lightgbm")  # one [n, 20] FP64 tensor on V2
PROTOCOLS = ("mlflow", "v2")  # HTTP routes, answers compared across servers
# gRPC ModelInfer cells for the numeric models (one FP64 tensor; the churn model's BYTES
# columns would need MLServer's pandas content type as gRPC parameters)
KIND_PROTOCOLS = {**{kind: (*PROTOCOLS, "grpc") for kind in NUMERIC_KINDS},
                  "churn": PROTOCOLS}
CONCURRENCY = (1, 8, 32)
ROWS = (1, 100)
MLFLOW_CELLS = (("mlflow", 8, 1), ("mlflow", 32, 1))  # random forest only
# the bare HTTP limit (bare.py): the compiled random forest's 1-row cells at c=8 and c=32
BARE_CELLS = tuple((protocol, c, 1) for protocol in PROTOCOLS for c in (8, 32))
# grpcio's own limit (bare.py's gRPC server): the compiled random forest's 1-row gRPC cells
BARE_GRPC_CELLS = (("grpc", 8, 1), ("grpc", 32, 1))
# servers measured on some cells only (the others on every cell of their routes)
ONLY_CELLS = {"mlflow": MLFLOW_CELLS, "bare": BARE_CELLS + BARE_GRPC_CELLS}
FEATURES = [f"f{i}" for i in range(20)]
MODEL_NAME = {kind: f"bench-{kind}" for kind in KINDS}


def cell_key(protocol: str, concurrency: int, rows: int) -> str:
    # the MLflow route keeps the key names of earlier runs of this benchmark
    return f"c{concurrency}_rows{rows}" + ("" if protocol == "mlflow" else f"_{protocol}")


def all_cells(protocols: tuple[str, ...]) -> list[tuple[str, int, int]]:
    return [(p, c, r) for p in protocols for r in ROWS for c in CONCURRENCY]


"""What a compiled model's original answered when it was compiled, so a server can answer
with the graph before the original model is loaded.

Loading the original means importing its library (scikit-learn with SciPy takes seconds)
and deserializing it; ONNX Runtime and the graph take a tenth of a second. ``ctcd models
compile`` therefore records, beside a verified graph, in ``compiled/recorded.json``:

- the original's answers on the rows a graph is checked on at load (the input example and
  a synthetic row, :func:`ctcd.serving.compiled.check_rows`), for each output;
- what the server says about the model without it: its flavor, task, classes and outputs;
- the sha256 of the graph those answers belong to.

A server starting up (:func:`ctcd.serving.model.load` with ``original_later``) opens the
graph, runs the check rows and compares them with these answers (the same tolerance as at
compile time), and is ready. It then loads the original in the background and compares
the two again; a graph that answers differently, here or there, is refused and the
original serves. Without this file (a version compiled before it existed, or a graph not
used) the original is loaded first, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from ctcd.serving.compiled import DIRECTORY, Manifest
from ctcd.serving.schema import Table

FILE: Final = "recorded.json"


@dataclass(frozen=True)
class Recorded:
    graph_sha256: str  # the graph these answers were compared with when it was compiled
    flavor: str  # the original's flavor ("sklearn", ...)
    outputs: tuple[str, ...]  # what a request may ask for: "predict", "predict_proba"
    task: str | None
    classes: tuple[Any, ...] | None  # the columns of predict_proba, in order
    answers: Mapping[str, np.ndarray]  # each output on the check rows

    def original(self, check: Table, names: tuple[str, ...]) -> Mapping[str, Any]:
        """The original's recorded answers, in place of calling it (``check`` must be the
        rows they were recorded on; other rows do not compare equal)."""
        return {n: self.answers[n] for n in names}

    def to_json(self) -> bytes:
        doc = {"graph_sha256": self.graph_sha256, "flavor": self.flavor,
               "outputs": list(self.outputs), "task": self.task,
               "classes": None if self.classes is None else np.asarray(self.classes).tolist(),
               "answers": {n: {"dtype": a.dtype.str, "values": a.tolist()}
                           for n, a in self.answers.items()}}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    @classmethod
    def read(cls, directory: Path) -> Recorded | None:
        """The recorded answers of a model directory; None when there are none, or they
        are unreadable (the original is then loaded first)."""
        path = directory / DIRECTORY / FILE
        if not path.is_file():
            return None
        try:
            doc = orjson.loads(path.read_bytes())
            classes = doc.get("classes")
            return cls(
                graph_sha256=str(doc["graph_sha256"]), flavor=str(doc["flavor"]),
                outputs=tuple(str(o) for o in doc["outputs"]),
                task=None if doc.get("task") is None else str(doc["task"]),
                classes=None if classes is None else tuple(classes),
                answers={str(n): np.asarray(a["values"], dtype=np.dtype(a["dtype"]))
                         for n, a in doc["answers"].items()})
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def usable(directory: Path) -> Recorded | None:
    """The recorded answers when the graph they belong to is the one the manifest says was
    verified and is used (verified, faster): then the graph may answer before the original
    is loaded. A cheap check: two small files, no ONNX Runtime."""
    manifest = Manifest.read(directory)
    if manifest is None or not manifest.verified or not manifest.faster:
        return None
    recorded = Recorded.read(directory)
    if recorded is None or recorded.graph_sha256 != manifest.sha256 or \
            "predict" not in recorded.outputs:
        return None
    return recorded

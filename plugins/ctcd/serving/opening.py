"""Opening a loaded version's compiled model, checked against the original, and loading the
original behind a graph that answered first: the part of :class:`ctcd.serving.model.LoadedModel`
that decides what answers (mixed into it; its attributes are the dataclass's)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ctcd.serving import compiled as compiled_module
from ctcd.serving.compiled import CompiledModel, CompiledStatus
from ctcd.serving.flavors import NativeModel, try_arrays
from ctcd.serving.recorded import Recorded
from ctcd.serving.schema import InputSchema, Table
from ctcd.serving.trees import TreeLibrary, open_verified_trees

log = logging.getLogger(__name__)


class Opening:
    """Opens what answers for a loaded version. ``open_compiled`` is what a server calls in
    the background once it is ready; the rest runs at warm-up."""

    uri: str
    local_path: Path
    schema: InputSchema | None
    example: Table | None
    native: NativeModel | None
    pyfunc: Any
    takes_arrays: bool
    compiled: CompiledModel | TreeLibrary | None
    compiled_status: CompiledStatus | None
    compiled_wanted: int | None
    trees_wanted: bool
    recorded: Recorded | None
    original_later: Callable[[], tuple[NativeModel | None, Any]] | None
    original_failed: str | None

    @property
    def runtime(self) -> str:
        raise NotImplementedError

    @property
    def output_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _output(self, name: str, data: Any, params: Mapping[str, Any] | None) -> Any:
        raise NotImplementedError

    def _by_original(self, table: Table, names: tuple[str, ...]) -> Mapping[str, Any]:
        """The original model's answers (never the graph's), for comparing the two."""
        return {n: np.asarray(self._output(n, table.to_model_input(), None)) for n in names}

    def open_compiled(self) -> None:
        """Open the compiled model ``warm(compiled_later=True)`` left for later, while the
        original answers requests; once verified it answers the next call. Nothing to do
        when there is none to open. A failure leaves the original answering, and says why.
        When the graph opened first, this loads the original instead and compares them."""
        if self.original_later is not None:
            try:
                self._load_original_and_compare(self.original_later)
            finally:
                self.original_later = None  # loaded and compared, or failed: not loading
            return
        if self.compiled_wanted is None:
            return
        try:
            self._open_compiled(self.example)
        except Exception as err:  # the original keeps answering, whatever went wrong here
            self.compiled_status = CompiledStatus(self.runtime, "failed", f"opening the "
                                                  f"compiled model failed: "
                                                  f"{type(err).__name__}: {err}")
            log.warning("%s: compiled model not used: %s", self.uri, self.compiled_status.reason)

    def _open_compiled(self, example: Table | None) -> None:
        """Use the version's compiled model when it was verified and answers as the original
        on the input example and synthetic rows now (in the process that serves: after a
        server's fork, as array calls are)."""
        threads, self.compiled_wanted = self.compiled_wanted, None
        native, schema = self.native, self.schema
        if native is None or schema is None or schema.tensor is not None or threads is None:
            self.compiled_status = CompiledStatus(self.runtime, "none", "a compiled model "
                                                  "takes named columns and answers each row")
            return
        check = compiled_module.check_rows(schema, self.example or example)
        self.compiled, self.compiled_status = compiled_module.open_verified(
            self.local_path, self._by_original, check, self.output_names, threads=threads,
            flavor=native.flavor)
        status = self.compiled_status
        if self.compiled is not None:
            log.info("%s: compiled model verified again at load; ONNX Runtime answers", self.uri)
            if self.trees_wanted:
                self._open_trees(self._by_original, check, threads)
        elif status.compiled in ("refused", "failed"):
            log.warning("%s: compiled model not used (%s): %s", self.uri, status.compiled,
                        status.reason)

    def _open_first(self) -> None:
        """Open the graph before the original is loaded, checked against the original's
        answers recorded when it was compiled; if it is refused, load the original now."""
        threads, self.compiled_wanted = self.compiled_wanted, None
        assert self.schema is not None and self.recorded is not None and threads is not None
        check = compiled_module.check_rows(self.schema, self.example)
        self.compiled, status = compiled_module.open_verified(
            self.local_path, self.recorded.original, check, self.recorded.outputs,
            threads=threads, flavor=self.recorded.flavor)
        if self.compiled is None:
            log.warning("%s: compiled model not used (%s): %s; loading the original now",
                        self.uri, status.compiled, status.reason)
            self.compiled_status = status
            loader, self.original_later = self.original_later, None
            assert loader is not None
            self.native, self.pyfunc = loader()
            return
        self.compiled_status = CompiledStatus(status.runtime, "verified", (
            f"{status.reason}; at load, equal to the original's answers recorded when it was "
            f"compiled, before the original itself was loaded"))
        log.info("%s: compiled model checked against the original's recorded answers; ONNX "
                 "Runtime answers while the original loads", self.uri)

    def _load_original_and_compare(
            self, loader: Callable[[], tuple[NativeModel | None, Any]]) -> None:
        """Load the original behind a graph already answering and compare the two on the
        check rows; a graph answering differently is refused and the original answers."""
        compiled, schema = self.compiled, self.schema
        assert compiled is not None and schema is not None
        check = compiled_module.check_rows(schema, self.example)
        try:
            self.native, self.pyfunc = loader()
            if self.native is not None:
                self.takes_arrays = try_arrays(self.native, check)
            expected = self._by_original(check, self.output_names)
            got = compiled.run(check, self.output_names)
        except Exception as err:  # the verified graph keeps answering; the failure is shown
            self.original_failed = f"{type(err).__name__}: {err}"
            log.error("%s: the original model could not be loaded after start (%s); the "
                      "compiled model keeps answering", self.uri, self.original_failed)
            return
        result = compiled_module.compare(expected, got, check.rows)
        if not result.equal:
            self.compiled = None
            self.compiled_status = CompiledStatus(self.runtime, "refused", (
                f"compared with the original once it was loaded: {result.describe()}"))
            log.warning("%s: compiled model refused: %s", self.uri, result.describe())
            return
        status = self.compiled_status
        assert status is not None
        self.compiled_status = CompiledStatus(status.runtime, "verified", (
            f"{compiled.manifest.reason}; verified again at load against the original"))
        log.info("%s: the original model is loaded and answers as the graph does", self.uri)

    def _open_trees(self, original: compiled_module.Original, check: Table,
                    threads: int) -> None:
        """For a scoring job's files, the version's tree library in place of the graph when
        it was built and is verified again now (:mod:`ctcd.serving.trees`)."""
        assert isinstance(self.compiled, CompiledModel) and self.compiled_status is not None
        trees, why = open_verified_trees(self.local_path, self.compiled.manifest, original,
                                         check, self.output_names, threads=threads)
        if trees is not None:
            self.compiled = trees
            self.compiled_status = CompiledStatus(trees.runtime, "verified", why)
            log.info("%s: tree library verified again at load; tl2cgen answers", self.uri)
        elif why:
            graph = self.compiled_status
            self.compiled_status = CompiledStatus(graph.runtime, graph.compiled,
                                                  f"{graph.reason}; {why}")
            log.info("%s: %s", self.uri, why)

"""Convert a natively served model to an ONNX graph: scikit-learn estimators and pipelines
(the spec's preprocessing and string categories inside the graph) with skl2onnx, XGBoost and
LightGBM models with onnxmltools.

Trees run in float32 in the graph, as scikit-learn's forests and XGBoost compute them; the
preprocessing before them runs in float64, as scikit-learn's does. Whatever the converter
makes is only used after :mod:`ctcd.compiled.version` found it equal to the original.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from typing import Any, Final

import numpy as np

from ctcd.serving.flavors import NativeModel
from ctcd.serving.schema import InputSchema

TREES: Final = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
_STRING_KINDS: Final = ("string",)


class NotCompilable(Exception):
    """The model has no converter, or its converter refused it: it is served as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Converted:
    graph: bytes
    inputs: str  # "columns" or "block"
    columns: tuple[tuple[str, str], ...]  # (column, "double" | "float" | "string")
    outputs: dict[str, str]  # predict / predict_proba -> graph output name
    converter: str


def convert(native: NativeModel, schema: InputSchema) -> Converted:
    """The ONNX graph of ``native``; NotCompilable says why there is none."""
    if schema.tensor is not None or not schema.columns:
        raise NotCompilable("the model's signature is a tensor, not columns")
    if native.flavor == "sklearn":
        return _sklearn(native, schema)
    if native.flavor == "xgboost":
        return _xgboost(native, schema)
    if native.flavor == "lightgbm":
        return _lightgbm(native, schema)
    raise NotCompilable(f"no converter for the {native.flavor or 'pyfunc'} flavor")


def _classifier(native: NativeModel) -> bool:
    return native.task in ("binary", "multiclass") and native.predict_proba is not None


def _sklearn(native: NativeModel, schema: InputSchema) -> Converted:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    model = native.model
    _refuse_native_categories(model)
    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    by_column = isinstance(first, ColumnTransformer)
    if by_column:
        columns = tuple((c.name, "string" if c.kind in _STRING_KINDS else "double")
                        for c in schema.columns)
        types: list[tuple[str, Any]] = [
            (n, StringTensorType([None, 1]) if k == "string" else DoubleTensorType([None, 1]))
            for n, k in columns]
    else:
        if any(c.kind in _STRING_KINDS for c in schema.columns):
            raise NotCompilable("text columns reach the estimator without an encoder in a "
                                "ColumnTransformer")
        columns = tuple((c.name, "double") for c in schema.columns)
        types = [("input", DoubleTensorType([None, len(columns)]))]
    options = {id(step): {"zipmap": False} for step in steps(model) if _is_classifier(step)}
    with _hist_gradient_boosting_fix(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            onx = to_onnx(model, initial_types=types, options=options or None,
                          target_opset={"": 17, "ai.onnx.ml": 3})
        except Exception as err:  # the converter's own error types, whatever they are
            raise NotCompilable(f"skl2onnx: {type(err).__name__}: {_short(err)}") from err
    _trees_in_float32(onx)
    return Converted(onx.SerializeToString(), "columns" if by_column else "block", columns,
                     _output_names(onx, native), f"skl2onnx {dist_version('skl2onnx')}")


def _xgboost(native: NativeModel, schema: InputSchema) -> Converted:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    model = native.model
    if not hasattr(model, "get_booster"):
        raise NotCompilable(f"onnxmltools converts XGBoost's scikit-learn models, not a "
                            f"{type(model).__name__}")
    names = model.get_booster().feature_names
    if names is not None and list(names) != list(schema.names):
        raise NotCompilable("the model's features are not the signature's columns in order")
    if getattr(model, "enable_categorical", False) or any(
            c.kind in _STRING_KINDS for c in schema.columns):
        raise NotCompilable("XGBoost categorical features are not converted")
    booster = model.get_booster()
    saved = booster.feature_names
    booster.feature_names = None  # onnxmltools reads split features as f0, f1, ...
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = convert_xgboost(model, initial_types=[
                ("input", FloatTensorType([None, len(schema.columns)]))], target_opset=15)
    except Exception as err:  # the converter's own error types
        raise NotCompilable(f"onnxmltools: {type(err).__name__}: {_short(err)}") from err
    finally:
        booster.feature_names = saved
    columns = tuple((c.name, "float") for c in schema.columns)
    return Converted(onx.SerializeToString(), "block", columns, _output_names(onx, native),
                     f"onnxmltools {dist_version('onnxmltools')}")


def _lightgbm(native: NativeModel, schema: InputSchema) -> Converted:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import DoubleTensorType

    model = native.model
    if not hasattr(model, "booster_"):
        raise NotCompilable(f"onnxmltools converts LightGBM's scikit-learn models, not a "
                            f"{type(model).__name__}")
    if any(c.kind in _STRING_KINDS for c in schema.columns) or getattr(
            model.booster_, "pandas_categorical", None):
        raise NotCompilable("LightGBM categorical features are not converted")
    names = model.booster_.feature_name()
    if list(names) != list(schema.names):
        raise NotCompilable("the model's features are not the signature's columns in order")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = convert_lightgbm(model, initial_types=[
                ("input", DoubleTensorType([None, len(schema.columns)]))],
                target_opset=15, zipmap=False)
    except Exception as err:  # the converter's own error types
        raise NotCompilable(f"onnxmltools: {type(err).__name__}: {_short(err)}") from err
    # onnxmltools' graph compares in float64, as LightGBM does, and sums in float32
    columns = tuple((c.name, "double") for c in schema.columns)
    return Converted(onx.SerializeToString(), "block", columns, _output_names(onx, native),
                     f"onnxmltools {dist_version('onnxmltools')}")


def _output_names(onx: Any, native: NativeModel) -> dict[str, str]:
    names = [o.name for o in onx.graph.output]
    if _classifier(native):
        if len(names) < 2:
            raise NotCompilable(f"the graph has outputs {names}, not a label and probabilities")
        return {"predict": names[0], "predict_proba": names[1]}
    return {"predict": names[0]}


def steps(model: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    return [s for _, s in model.steps] if isinstance(model, Pipeline) else [model]


def _is_classifier(step: Any) -> bool:
    from sklearn.base import is_classifier

    return bool(is_classifier(step))


def _refuse_native_categories(model: Any) -> None:
    for step in steps(model):
        flags = getattr(step, "is_categorical_", None)
        if flags is not None and np.asarray(flags).any():
            raise NotCompilable(f"{type(step).__name__} with native categorical splits "
                                "(skl2onnx converts numeric splits only)")


class _hist_gradient_boosting_fix:
    """skl2onnx 1.20 writes HistGradientBoosting's ``missing_go_to_left`` as numpy uint8 for
    branches and ``False`` for leaves; onnx 1.23 refuses the mixed list ("Expected an int,
    got a boolean"). Patched for the conversion only: the list is made plain ints."""

    def __enter__(self) -> None:
        from skl2onnx.operator_converters import random_forest

        self._module = random_forest
        name = "add_tree_to_attribute_pairs_hist_gradient_boosting"
        self._original: Callable[..., Any] = getattr(random_forest, name)
        original = self._original

        def fixed(attr_pairs: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            original(attr_pairs, *args, **kwargs)
            key = "nodes_missing_value_tracks_true"
            attr_pairs[key] = [int(v) for v in attr_pairs[key]]

        random_forest.add_tree_to_attribute_pairs_hist_gradient_boosting = fixed

    def __exit__(self, *exc: object) -> None:
        self._module.add_tree_to_attribute_pairs_hist_gradient_boosting = self._original


def _trees_in_float32(onx: Any) -> None:
    """Make every tree ensemble take float32 and answer float64 (a Cast on each side).
    skl2onnx and onnxmltools declare a double tree's outputs double, which ONNX Runtime's
    TreeEnsemble operators do not produce (the session refuses the graph), and its double
    path answered differently here. The input before the tree stays float64 (scaling and
    encoding as scikit-learn does them)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = onx.graph
    declared = {v.name: v.type.tensor_type.elem_type
                for v in [*graph.value_info, *graph.output, *graph.input]}
    nodes = []
    for node in graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in TREES:
            nodes.append(node)
            continue
        attributes = []
        for attribute in node.attribute:
            if attribute.name.endswith("_as_tensor"):
                values = numpy_helper.to_array(attribute.t).astype(np.float32).tolist()
                attributes.append(helper.make_attribute(attribute.name[:-10], values))
            else:
                attributes.append(attribute)
        del node.attribute[:]
        node.attribute.extend(attributes)
        source = node.input[0]
        nodes.append(helper.make_node("Cast", [source], [f"{source}_f32"], to=TensorProto.FLOAT,
                                      name=f"{node.name}_input_f32"))
        node.input[0] = f"{source}_f32"
        nodes.append(node)
        index = 1 if node.op_type == "TreeEnsembleClassifier" else 0
        output = node.output[index]
        if declared.get(output, TensorProto.DOUBLE) == TensorProto.DOUBLE:
            node.output[index] = f"{output}_f32"
            nodes.append(helper.make_node("Cast", [f"{output}_f32"], [output],
                                          to=TensorProto.DOUBLE, name=f"{node.name}_output_f64"))
    del graph.node[:]
    graph.node.extend(nodes)


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text[:300]

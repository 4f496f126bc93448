"""Compiled models: a registered version's model converted to an ONNX graph, verified equal
to the original on the holdout rows and the input example, and logged beside it
(:mod:`ctcd.compiled.convert`, :mod:`ctcd.compiled.version`). The runtime that serves it is
:mod:`ctcd.serving.compiled`."""

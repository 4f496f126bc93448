"""The ctcd model server: MLflow scoring and KServe V2 protocols over one data plane, with
signature-checked input, several versions with traffic weights, adaptive batching,
Prometheus metrics and bearer-token auth. Start it with ``python -m ctcd.serving``."""

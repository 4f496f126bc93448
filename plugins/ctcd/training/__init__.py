"""Training and evaluation: scikit-learn pipelines tracked in MLflow."""

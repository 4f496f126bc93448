"""Data snapshots: the synthetic churn generator and the snapshot store."""

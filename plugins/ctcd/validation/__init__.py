"""Data validation: a snapshot must pass before anything is trained on it."""

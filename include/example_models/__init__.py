"""Training code of the example models: what a user's own trainer looks like. Model files
name a function here as `example_models.<module>:<function>`."""

"""Batch and offline scoring: a registered model version applied to many rows in bounded
memory, each prediction recording the version that made it, bad rows set aside with a
reason. ``score`` is the chunked core (files, frames); ``rows`` checks rows against the
signature; ``model`` resolves ``name@alias`` to a version and loads it as the model server
does. The ``ctcd predict`` command, the ``batch_inference`` DAG and the streaming scorer
build on these."""

"""Streaming inference: a long-lived scorer on a Redis Stream consumer group.

Producers ``XADD`` requests (one row of features as JSON) to a stream; any number of
scorers in one consumer group read what is waiting, score it as one batch with a registered
model version, write each prediction (with the version that made it and the request's
entry id) to an output stream and acknowledge it in the same transaction. The queue
absorbs bursts: producers never wait for the model, and scorers work at their own rate.
See :mod:`ctcd.streaming.scorer` for the delivery guarantees and
:mod:`ctcd.streaming.messages` for the wire format.

Why a process of its own rather than a route of the model server:

* Different failure and scaling unit. The model server answers callers who wait; its
  capacity is sized for latency. A scorer's work waits in Redis; it is sized for
  throughput, and it is scaled (more consumers in the group) or stopped for maintenance
  without touching the endpoint online callers use. A slow backlog never steals the
  server's CPU from requests someone is waiting on.
* Different delivery contract. An HTTP request lives as long as its connection; a stream
  entry must survive the death of whoever holds it (pending entries, XAUTOCLAIM,
  acknowledgement after the write). That bookkeeping is a loop with its own state, which
  does not belong inside an ASGI app with several workers and a traffic split.
* Different version semantics. The server holds several versions at once for canary and
  blue/green; a scorer follows one alias (``@champion``) and swaps between batches, so
  each output names exactly one version.

What it shares with the server is everything that decides an answer: the model is loaded
by ``ctcd.serving.model`` and rows are checked by ``ctcd.serving.schema``, so a request
the server refuses is dead-lettered here with the same reason, and one it scores gets the
same prediction. The cost is memory: each scorer holds its own copy of the model.

Deployers run scorers like model servers, through the contract's optional
:class:`ctcd.deployers.scorers.SupportsScorers` capability: the ``local`` backend as detached
processes (pid + start time, a registry record, logs), the ``kubernetes`` backend as a
Deployment with probes on the scorer's health port (:mod:`ctcd.streaming.health`); see
``ctcd streaming --help``.
"""

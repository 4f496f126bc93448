"""Start a streaming scorer: ``python -m ctcd.streaming --model-uri models:/NAME@champion
--redis-url redis://127.0.0.1:6379/0 --stream S --group G --consumer C`` (the deployer runs
exactly this; ``--help`` lists every option). It prints ``ctcd streaming scorer ready: ...``
once the model is loaded and it reads the stream, and exits 0 on SIGTERM after finishing
the batch in hand, 2 when the model cannot be loaded."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from ctcd.errors import CtcdError
from ctcd.streaming.settings import ScorerSettings


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic_settings import CliApp

    settings = CliApp.run(ScorerSettings, cli_args=list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ctcd.batch.model import load_version, resolve_version
    from ctcd.data.spec import load_spec
    from ctcd.settings import get_settings
    from ctcd.streaming.scorer import run

    # The process's one registry, as for the model server (models load through it).
    tracking_uri = settings.tracking_uri or get_settings().tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        spec = load_spec(settings.dataset) if settings.dataset else None
        return run(settings, resolve=lambda ref: resolve_version(ref, tracking_uri),
                   load=load_version, spec=spec)
    except CtcdError as err:
        print(f"ctcd streaming scorer: {err.message}", file=sys.stderr, flush=True)
        return 2

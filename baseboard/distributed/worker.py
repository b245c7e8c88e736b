"""The entry point of a worker process that rank 0 started (spawn): build the same engine
as rank 0, with this rank's shard of the model, and run the steps rank 0 sends."""

from __future__ import annotations

import os
from typing import Any

from .launch import Launch
from .workers import report_failure


def run_worker(rank: int, size: int, init_method: str, args: Any, errors: Any) -> None:
    """Rank ``rank`` of ``size``; a failure is reported to the driver (through ``errors``)
    with its text, and the process exits with code 1."""
    from ..engine.llm_engine import LLMEngine

    os.environ["TQDM_DISABLE"] = "1"  # rank 0 shows the load's progress
    try:
        LLMEngine(args, launch=Launch(rank, size, rank, init_method))
    except BaseException as exc:
        report_failure(errors, rank, exc)
        raise SystemExit(1) from None

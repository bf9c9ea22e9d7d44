"""Entry point of a training child process: ``python -m mlcp.trainer.child SPEC RESULT PARENT``.

SPEC is a pickled ``(JobSpec, sys.path)`` written by the worker; RESULT receives JSON (the parent
never unpickles anything the training code could have written). A thread exits the process
when the worker that started it is gone, so a ``kill -9`` of the trainer leaves no orphan.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    """Run one job and write its outcome as JSON."""
    spec_path, result_path, parent = Path(argv[0]), Path(argv[1]), int(argv[2])
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    spec, sys_path = pickle.loads(spec_path.read_bytes())
    sys.path[:0] = [p for p in sys_path if p not in sys.path]
    from mlcp.trainer.training import StageError, run_job

    outcome: tuple[str, dict[str, Any]]
    try:
        outcome = ("ok", run_job(spec))
    except StageError as exc:
        outcome = ("failed", {"stage": exc.stage, "error": str(exc), "error_type": exc.error_type})
    except BaseException as exc:  # the entrypoint is user code: report whatever it raises
        outcome = (
            "failed",
            {
                "stage": "train",
                "error": traceback.format_exc(limit=8),
                "error_type": type(exc).__name__,
            },
        )
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.replace(result_path)  # the parent sees a complete result or none
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

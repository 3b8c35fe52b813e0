"""``python -m serve``: the main job (see serve/main_job.py)."""

import os
import sys

# Ray reads this when it is imported: a single node on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

if __name__ == "__main__":  # vLLM spawns processes that import this module again
    from serve.main_job import main

    sys.exit(main())

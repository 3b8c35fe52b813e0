"""``python -m serve``: the main job (see serve/main_job.py)."""

import sys

from serve.main_job import main

sys.exit(main())

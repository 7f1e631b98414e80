#!/usr/bin/env python
"""Generate a video from a text prompt or class label: ``python generate.py --prompt "a red circle moving left"``.

The same command is installed as ``tokvid-generate``. See ``python generate.py --help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipelines.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

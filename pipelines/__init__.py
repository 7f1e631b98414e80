"""End-to-end pipelines: prompt or class label -> generator -> tokenizer decoder -> video."""

from pipelines.video import DEFAULT_MODEL_DIR, PipelineConfig, VideoOutput, VideoPipeline

__all__ = ["DEFAULT_MODEL_DIR", "PipelineConfig", "VideoOutput", "VideoPipeline"]

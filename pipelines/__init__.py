"""End-to-end pipelines: prompt or class label -> generator -> tokenizer decoder -> video."""

from pipelines.video import PipelineConfig, VideoOutput, VideoPipeline

__all__ = ["PipelineConfig", "VideoOutput", "VideoPipeline"]

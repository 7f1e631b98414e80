"""The causal 3D discrete video tokenizer: encoder, quantizers (VQ, FSQ, LFQ, BSQ), decoder."""

from tokenizer.model import TokenizerConfig, TokenizerOutput, VideoTokenizer

__all__ = ["TokenizerConfig", "TokenizerOutput", "VideoTokenizer"]

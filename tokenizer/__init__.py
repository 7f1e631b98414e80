"""The causal 3D discrete video tokenizer: encoder, quantizers (VQ, FSQ, LFQ, BSQ), decoder.

One job: videos to token ids and back (:class:`VideoTokenizer`), plus the losses it is trained
with (:mod:`tokenizer.losses`). May import only :mod:`core` from this repository (and
third-party libraries); never the generator, pipelines, training, data or evaluation packages,
nor tools/.
"""

from tokenizer.model import TokenizerConfig, TokenizerOutput, VideoTokenizer

__all__ = ["TokenizerConfig", "TokenizerOutput", "VideoTokenizer"]

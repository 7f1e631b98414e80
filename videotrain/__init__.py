"""Training: one :class:`~videotrain.trainer.Trainer` core that the generator and tokenizer tasks build on.

- ``trainer``: the loop (LR schedule, non-finite and time-budget guards, logging, checkpoints, resume);
- ``optim``: one optimizer config and pure schedule functions;
- ``config``: the run vocabulary (``run.*``) shared by both tasks;
- ``distributed``: the only module that imports DeepSpeed (process groups, engines, ZeRO state);
- ``checkpoint``, ``engines``, ``ema``, ``outputs``: checkpoint files, several engines saved as one,
  weight EMA, metrics / samples / exports;
- ``generator_task``, ``tokenizer_task``: what each model trains on and how.

May import: ``core``, ``tokenizer``, ``generator``, ``pipelines``, ``videodata``, ``videoeval.metrics``.
Never ``tools`` or ``bench``.
"""

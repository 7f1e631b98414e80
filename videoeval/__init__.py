"""Evaluation: metrics, FVD, the shapes analyzer, adherence / reconstruction / video evaluation, and reports.

May import: ``core``, ``tokenizer``, ``generator``, ``pipelines``, ``videodata``. Never ``videotrain``,
``tools`` or ``bench``.
"""

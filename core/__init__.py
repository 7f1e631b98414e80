"""Foundations with no model knowledge: strict configs (YAML + dotted overrides), safetensors weights,
atomic file writes and hashes, video files (read, write, resize, contact sheets), tables and CLI plumbing.

May import: nothing first-party. Everything else may import it.
"""

"""Foundations with no model knowledge: strict configs (YAML + dotted overrides), safetensors weights,
atomic file writes and hashes, video files (read, write, resize, contact sheets), tables, CLI plumbing, and the
collectives that keep module-updated state equal across data-parallel ranks.

May import: nothing first-party. Everything else may import it.
"""

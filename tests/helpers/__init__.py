"""Small builders shared by tests (tiny models and data written to a tmp dir)."""

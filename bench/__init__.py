"""Side-by-side benchmarks (ours against a peer or a floor, in one run); imports libraries, never ``tools``."""

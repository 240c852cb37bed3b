"""benchmarks/: the quick modes of the benchmarks and make gpu-check."""

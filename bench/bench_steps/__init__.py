"""Steps used by the benchmarks (not part of the sample application)."""

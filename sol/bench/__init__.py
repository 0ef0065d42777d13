"""Measurement: workloads, timing (interleaved A/B), profiling, candidate evaluation."""

"""Benchmarks: latency across backends, GEMM efficiency, Jetson power, and their reports."""

"""Benchmark: this server vs llama-cpp-python's server vs llama.cpp's llama-server (docs/benchmark.md)."""

"""Benchmark: this server vs llama-cpp-python's bundled server vs llama.cpp's llama-server (docs/benchmark.md)."""

"""Benchmark harness for recalled-lite (`make bench`, `make bench-quick`). See bench/README.md."""

"""Benchmarks that print JSON figures (``dicomnode bench ingest|results|analysis``)."""

"""Measurement: complexity counts, throughput and memory benchmarks."""

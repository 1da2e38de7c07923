"""Workloads shared by the test suite and the benchmarks (neither imports the other):
synthetic generations on real stores, the promotion workload and its reader probe."""

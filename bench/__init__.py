"""On-demand benchmarks (not part of the test run): ``make bench``."""

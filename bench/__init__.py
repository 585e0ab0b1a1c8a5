"""Benchmarks.  `make bench` runs every bench/bench_*.py module's run() and writes each
result to bench/results/<name>.json.  Figures are ratios within one run: this machine is
noisy, so nothing here is a pass/fail assertion."""

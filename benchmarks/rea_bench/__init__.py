"""REA's benchmarks: ``rea bench`` (REA against Optuna's TPE and random search at equal compute,
:mod:`rea_bench.bench`) and one module per service or kernel benchmark (``python -m
rea_bench.<name>``). The package itself imports nothing, so a benchmark loads only what it uses:
the kernel benchmarks run on a GPU machine with PyTorch and a few of REA's dependencies."""

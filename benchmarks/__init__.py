"""REA benchmarks: each module is one command (``python -m benchmarks.<name> --help``)."""

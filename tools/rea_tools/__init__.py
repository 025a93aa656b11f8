"""People-facing tools: the `rea` command line, the embedded stack and its supervisor, the chaos suite."""

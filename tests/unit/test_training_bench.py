"""`python -m rea_bench.training` at a size that fits CI: every optimiser variant trains and is
timed, and the report says how many rows each step touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rea_bench.training import main


def test_every_optimiser_variant_is_timed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "training.json"
    small = ["--train-batch", "64", "--steps", "2", "--rounds", "1", "--cardinality", "500", "--no-compile"]
    main([*small, "--json", str(report)])
    result = json.loads(report.read_text())
    assert list(result["seconds"]) == [
        "adam, PyTorch default",
        "adam, fused",
        "adam + sparse adagrad",
        "adam + rowwise adagrad",
        "adam + lazy adam",
        "adagrad, fused",
    ]
    assert all(len(times) == 1 and times[0] > 0 for times in result["seconds"].values())
    assert result["table_rows"] == 26 * 500 + 26  # each table has a row for unseen ids
    assert len(result["looked_up"]) == 2 and all(0 < rows <= 64 * 26 for rows in result["looked_up"])
    assert "adam + sparse adagrad" in capsys.readouterr().out

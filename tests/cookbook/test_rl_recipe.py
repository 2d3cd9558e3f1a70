"""The math_rl recipe's command line, end to end against the session's mesh (tiny-llama): it runs,
prints held-out accuracy before and after, and leaves metrics, a plot and a report; bad flags
are refused with a message naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from treadle_cookbook.recipes import math_rl
from treadle_runtime.launcher import LocalMesh

from .conftest import TINY


def test_math_rl_runs_and_reports(
    mesh: LocalMesh, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = ["--base-url", mesh.endpoint, "--api-key", mesh.api_key, "--base-model", TINY]
    run = ["--log-dir", str(tmp_path), "--steps", "1", "--groups-per-batch", "2"]
    small = ["--group-size", "2", "--max-tokens", "4", "--eval-limit", "3", "--max-operand", "9"]
    code = math_rl.main([*service, *run, *small])
    assert code == 0
    out = capsys.readouterr().out
    assert "held-out accuracy (3 problems, greedy): before" in out
    assert f"plot: {tmp_path / 'metrics.png'}" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["held_out_problems"] == 3 and report["steps"] == 1
    assert {"test/correct", "test/format"} <= set(report["before"]) & set(report["after"])
    assert (tmp_path / "metrics.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--loss-fn", "dro"], "--loss-fn: invalid choice"),
        (["--ops", "/"], "ops: '/' must be made of"),
    ],
)
def test_bad_flags_are_named(
    mesh: LocalMesh,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    argv = ["--base-url", mesh.endpoint, "--api-key", mesh.api_key, "--base-model", TINY]
    argv += ["--log-dir", str(tmp_path), *flags]
    if flags[0] == "--loss-fn":
        with pytest.raises(SystemExit):
            math_rl.main(argv)
    else:
        assert math_rl.main(argv) == 2
    assert message in capsys.readouterr().err

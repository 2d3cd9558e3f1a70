"""`python -m treadle_models.prepare`: on a warm cache it answers at once without importing torch;
an unknown name on a cold cache, or no name at all, fails with a plain message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from treadle_models.cache import FORMAT, MARKER, SMOLLM2_FOLDER
from treadle_models.prepare import main

_WARM = (
    "import sys; from treadle_models.prepare import main; "
    "code = main(['treadle/tiny-llama', 'HuggingFaceTB/SmolLM2-135M-Instruct']); "
    "print('torch imported' if 'torch' in sys.modules else 'no torch', flush=True); "
    "sys.exit(code)"
)


def test_a_warm_cache_is_ready_without_importing_torch(tmp_path: Path) -> None:
    folder = tmp_path / "models" / SMOLLM2_FOLDER
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(FORMAT)
    done = subprocess.run(
        [sys.executable, "-c", _WARM],
        env={**os.environ, "TREADLE_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "no torch"
    assert "treadle/tiny-llama, HuggingFaceTB/SmolLM2-135M-Instruct ready" in done.stdout


def test_an_unknown_name_on_a_cold_cache_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TREADLE_CACHE_DIR", str(tmp_path))
    assert main(["nobody/no-such-model"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("prepare: base_model 'nobody/no-such-model' is not served here")
    assert not (tmp_path / "models" / SMOLLM2_FOLDER).exists()


def test_no_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: python -m treadle_models.prepare MODEL..." in capsys.readouterr().err

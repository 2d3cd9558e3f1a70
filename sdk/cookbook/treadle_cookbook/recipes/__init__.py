"""Runnable recipes (`python -m treadle_cookbook.recipes.<name> --help`) and what their command
lines share: how to reach a mesh, the report every run leaves (report.json beside metrics.jsonl
and metrics.png), and the exit code 2 with a one-line error for bad data or flags.
`--base-url` / `--api-key` default to TREADLE_BASE_URL / TREADLE_API_KEY (TINKER_* are read too);
`--local` starts a whole local mesh for the run instead and stops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import treadle

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def add_service_args(parser: argparse.ArgumentParser) -> None:
    """The flags that say which mesh a recipe talks to."""
    group = parser.add_argument_group("service")
    group.add_argument(
        "--base-url",
        default=_env("TREADLE_BASE_URL", "TINKER_BASE_URL"),
        help="scheduler address host:port (default: $TREADLE_BASE_URL)",
    )
    group.add_argument(
        "--api-key",
        default=_env("TREADLE_API_KEY", "TINKER_API_KEY"),
        help="API key (default: $TREADLE_API_KEY)",
    )
    group.add_argument(
        "--local",
        action="store_true",
        help="start a local mesh serving the base model for this run, and stop it afterwards",
    )
    group.add_argument(
        "--local-data-dir",
        default=None,
        help="state and logs of the --local mesh (default: a temporary directory)",
    )


@contextmanager
def connect(args: argparse.Namespace, base_model: str) -> Iterator[treadle.ServiceClient]:
    """A ServiceClient for the mesh the flags name, started here with `--local`."""
    if args.local:
        from treadle_runtime.launcher import LocalMesh, UpConfig

        with tempfile.TemporaryDirectory(prefix="treadle-local-") as scratch:
            config = UpConfig(
                base_model=base_model, port=0, data_dir=args.local_data_dir or scratch
            )
            print(f"starting a local mesh for {base_model} ...", flush=True)
            with LocalMesh(config) as mesh:
                print(f"local mesh at {mesh.endpoint}", flush=True)
                with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as client:
                    yield client
        return
    if not args.base_url:
        raise SystemExit("no mesh: pass --base-url (or set TREADLE_BASE_URL), or --local")
    with treadle.ServiceClient(base_url=args.base_url, api_key=args.api_key) as client:
        yield client


def write_report(log_dir: str | Path, started: float, **fields: Any) -> dict[str, Any]:
    """The run's report: `fields`, its duration and where its curves are; also report.json."""
    log_dir = Path(log_dir)
    report = {
        **fields,
        "seconds": round(time.monotonic() - started, 1),
        "metrics": str(log_dir / "metrics.jsonl"),
        "plot": str(log_dir / "metrics.png"),
    }
    (log_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_footer(report: dict[str, Any], done: str) -> None:
    """The report's closing lines: what ran in how long, the checkpoint, the curves."""
    print(f"{done} in {report['seconds']}s")
    print(f"checkpoint: {report['state_checkpoint']}")
    print(f"metrics: {report['metrics']}\nplot: {report['plot']}")


def run_recipe(
    args: argparse.Namespace,
    run: Callable[[treadle.ServiceClient, argparse.Namespace], dict[str, Any]],
    print_report: Callable[[dict[str, Any]], None],
    errors: tuple[type[Exception], ...],
    check: Callable[[], object] = lambda: None,
) -> int:
    """`check` the data (before any mesh starts), run against the flags' mesh, print the report;
    `errors` (and ValueError) become one line on stderr and exit code 2."""
    caught: tuple[type[Exception], ...] = (*errors, ValueError)
    try:
        check()
        with connect(args, args.base_model) as service:
            report = run(service, args)
    except caught as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    return 0

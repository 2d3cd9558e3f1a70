"""The `treadle` command: `treadle up` runs a local mesh (needs the services installed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: treadle COMMAND [flags]

commands:
  up           start the whole mesh locally (SeaweedFS, checkpoints, trainer, sampler, scheduler)
  checkpoints  list, inspect, download, export, delete and re-time checkpoints

`treadle COMMAND --help` lists a command's flags."""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a subcommand."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "up":
        try:
            from treadle_runtime.up import main as up
        except ImportError:
            print("treadle up: the services are not installed (run `make setup`)", file=sys.stderr)
            return 1
        return up(rest)
    if command == "checkpoints":
        from treadle.checkpoints_cli import main as checkpoints

        return checkpoints(rest)
    print(f"treadle: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

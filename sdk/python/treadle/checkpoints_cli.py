"""`treadle checkpoints`: list, inspect, download, export, delete and re-time checkpoints.

    treadle checkpoints ls [--run RUN] [--json]
    treadle checkpoints info PATH
    treadle checkpoints download PATH [-o FILE.tar]
    treadle checkpoints export PATH --peft DIR | --merged DIR [--base-model NAME] [--dtype DTYPE]
    treadle checkpoints rm [PATH ...] [--run RUN] [--older-than DURATION] [--kind KIND] [--dry-run]
    treadle checkpoints ttl PATH DURATION|keep

It talks to the public scheduler endpoint (TREADLE_BASE_URL / TREADLE_API_KEY, or --base-url /
--api-key) through the SDK's RestClient, so it sees exactly the caller's tenant. Transfers show a
tqdm progress bar on stderr when tqdm is installed. `export --merged` is the only command that
needs torch: it imports treadle_models.export when it runs, never at startup.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from treadle.errors import TreadleError
from treadle.paths import parse_path
from treadle.rest_client import CheckpointType, Progress, RestClient
from treadle.service_client import ServiceClient
from treadle.types import Checkpoint

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_KINDS: dict[str, CheckpointType] = {
    "state": "training", "training": "training", "sampler": "sampler"
}  # fmt: skip


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "15m", "12h", "7d" or "2w"; ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))


# ---------------------------------------------------------------------- transfers


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Progress | None]:
    """A progress callback drawing a tqdm bar on stderr (None when disabled or no tqdm)."""
    if not enabled:
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield None
        return
    bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _download(rest: RestClient, path: str, destination: Path, show: bool) -> Path:
    with progress_bar(f"download {parse_path(path).name}", show) as progress:
        return rest.download_checkpoint(path, destination, progress).result()


def extract_peft(archive: Path, out_dir: Path) -> dict[str, object]:
    """Write the PEFT adapter files of a checkpoint archive into `out_dir`; returns the
    checkpoint's metadata (a state checkpoint's optimizer files are left out)."""
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        missing = [name for name in PEFT_FILES if name not in names]
        if missing:
            raise TreadleError(f"the checkpoint has no {', '.join(missing)}: not a LoRA adapter")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in PEFT_FILES:
            source = tar.extractfile(name)
            assert source is not None
            with source, open(out_dir / name, "wb") as target:
                while piece := source.read(1 << 20):
                    target.write(piece)
        metadata = tar.extractfile("metadata.json")
        assert metadata is not None
        checkpoint: dict[str, object] = json.load(metadata)["checkpoint"]
        return checkpoint


# ---------------------------------------------------------------------- commands


def _ls(rest: RestClient, args: argparse.Namespace) -> int:
    checkpoints = rest.list_checkpoints(args.run or "").result()
    if args.json:
        print(json.dumps([asdict(c) for c in checkpoints], indent=2))
        return 0
    rows = [("PATH", "KIND", "STEP", "SIZE", "CREATED", "EXPIRES")]
    rows += [
        (c.path, c.checkpoint_type, str(c.step), _size(c.size_bytes), _when(c.time),
         _when(c.expires_at))
        for c in checkpoints
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _info(rest: RestClient, args: argparse.Namespace) -> int:
    info = rest.get_weights_info(args.path).result()
    if args.json:
        print(json.dumps(asdict(info), indent=2))
    else:
        for key, value in asdict(info).items():
            print(f"{key:<16}{value}")
    return 0


def _download_cmd(rest: RestClient, args: argparse.Namespace) -> int:
    parsed = parse_path(args.path)
    kind = "weights" if parsed.kind == "state" else "sampler_weights"
    destination = Path(args.output or f"{parsed.run_id}-{kind}-{parsed.name}.tar")
    _download(rest, args.path, destination, not args.no_progress)
    print(destination)
    return 0


def _export(rest: RestClient, args: argparse.Namespace) -> int:
    if not args.peft and not args.merged:
        raise TreadleError("export: give --peft DIR, --merged DIR or both")
    merge: Callable[..., Path] | None = None
    if args.merged:
        try:
            from treadle_models.export import merge_adapter
        except ImportError:
            raise TreadleError(
                "export --merged needs torch and treadle-models (pip install treadle-models)"
            ) from None
        merge = merge_adapter
    with tempfile.TemporaryDirectory(prefix="treadle-export-") as scratch:
        archive = _download(rest, args.path, Path(scratch) / "checkpoint.tar", not args.no_progress)
        adapter = Path(args.peft) if args.peft else Path(scratch) / "adapter"
        checkpoint = extract_peft(archive, adapter)
        if args.peft:
            print(f"PEFT adapter: {adapter}")
        if merge is not None:
            base_model = args.base_model or str(checkpoint.get("base_model") or "") or None
            merged = merge(adapter, args.merged, base_model=base_model, dtype=args.dtype)
            print(f"merged model: {merged}")
    return 0


def _rm(rest: RestClient, args: argparse.Namespace) -> int:
    filtered = args.run or args.older_than is not None or args.kind
    if not args.paths and not filtered:
        raise TreadleError("rm: give checkpoint paths, or --run / --older-than / --kind")
    if args.paths and filtered:
        raise TreadleError("rm: give either paths or filters, not both")
    kind = _KINDS[args.kind] if args.kind else None
    if args.dry_run:
        if args.paths:
            chosen = [str(parse_path(path)) for path in args.paths]
        else:
            found = rest.matching_checkpoints(args.run or "", args.older_than, kind).result()
            chosen = [c.path for c in found]
        for path in chosen:
            print(f"would delete {path}")
        return 0
    if args.paths:
        deleted = [d for path in args.paths for d in rest.delete_checkpoint(path).result()]
    else:
        deleted = rest.delete_checkpoints(args.run or "", args.older_than, kind).result()
    for path in deleted:
        print(f"deleted {path}")
    if not deleted:
        print("nothing matched")
    return 0


def _ttl(rest: RestClient, args: argparse.Namespace) -> int:
    if args.duration.lower() in ("keep", "none", "never"):
        ttl = None
    else:
        try:
            ttl = round(parse_duration(args.duration))
        except ValueError as exc:
            raise TreadleError(f"ttl: {exc}, or keep") from None
    checkpoint: Checkpoint = rest.set_checkpoint_ttl(args.path, ttl).result()
    print(f"{checkpoint.path} expires {_when(checkpoint.expires_at)}")
    return 0


COMMANDS = {
    "ls": _ls, "info": _info, "download": _download_cmd, "export": _export, "rm": _rm, "ttl": _ttl,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `treadle checkpoints`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--base-url", help="scheduler endpoint (default: $TREADLE_BASE_URL)")
    common.add_argument("--api-key", help="API key (default: $TREADLE_API_KEY)")
    transfer = argparse.ArgumentParser(add_help=False)
    transfer.add_argument("--no-progress", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(prog="treadle checkpoints", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = sub.add_parser("ls", parents=[common], help="list checkpoints (newest first)")
    ls.add_argument("--run", help="only this run (training model id)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    info = sub.add_parser("info", parents=[common], help="weights info of one checkpoint")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print JSON")
    download = sub.add_parser(
        "download", parents=[common, transfer], help="download a checkpoint as a tar archive"
    )
    download.add_argument("path")
    download.add_argument("-o", "--output", help="archive file (default: RUN-KIND-NAME.tar)")
    export = sub.add_parser(
        "export", parents=[common, transfer], help="export as a PEFT adapter or a merged model"
    )
    export.add_argument("path")
    export.add_argument("--peft", metavar="DIR", help="write the PEFT adapter folder here")
    export.add_argument("--merged", metavar="DIR", help="write a merged Hugging Face model here")
    export.add_argument("--base-model", help="base model to merge into (default: the recorded one)")
    export.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
        help="weights dtype of the merged model (the merge itself is float32)",
    )  # fmt: skip
    rm = sub.add_parser("rm", parents=[common], help="delete checkpoints by path or by filter")
    rm.add_argument("paths", nargs="*", metavar="PATH")
    rm.add_argument("--run", help="every checkpoint of this run (with the other filters)")
    rm.add_argument("--older-than", type=_duration, metavar="DURATION", help="e.g. 7d, 12h")
    rm.add_argument("--kind", choices=sorted(_KINDS), help="only state or sampler checkpoints")
    rm.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    ttl = sub.add_parser("ttl", parents=[common], help="set a checkpoint's time to live")
    ttl.add_argument("path")
    ttl.add_argument("duration", metavar="DURATION|keep", help="e.g. 7d from now, or keep")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `treadle checkpoints` command; 0 on success, 1 when it failed, 2 on bad usage."""
    args = build_parser().parse_args(argv)
    try:
        with ServiceClient(base_url=args.base_url, api_key=args.api_key) as service:
            return COMMANDS[args.command](service.create_rest_client(), args)
    except (TreadleError, ValueError, OSError) as exc:
        print(f"treadle checkpoints {args.command}: error: {exc}", file=sys.stderr)
        return 1

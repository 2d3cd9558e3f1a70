"""Offline Hugging Face caches for clients that load tokenizers and datasets by name.

tinker-cookbook's recipes load their tokenizer with `AutoTokenizer.from_pretrained(model_name)`
and their data with `datasets.load_dataset("HuggingFaceH4/no_robots")`, on the client. With
`HF_HUB_OFFLINE=1` both only read what an `HF_HOME` holds, so this module writes the two layouts
those libraries read, without a download:

- Tokenizers: `HF_HOME/hub/models--ORG--NAME/snapshots/<revision>/` with the tokenizer files and
  `config.json` (transformers 5.5's AutoTokenizer reads the model type from it), and
  `refs/main` naming the revision, as `huggingface_hub` leaves a downloaded repo. The revision
  is a hash of the files, so writing the same tokenizer again changes nothing.
- Datasets: `HF_HOME/datasets/ORG___NAME/<config>/0.0.0/<hash>/` with one Arrow file per split
  and `dataset_info.json`, the cache `datasets` itself writes after a download. Offline,
  `datasets` 5.2 never reads hub snapshots of dataset repos (it refuses before looking); it
  falls back to this cache only. Its format belongs to the `datasets` library, so it is written
  by the `datasets` of the client that will read it: `write_dataset(..., python=...)` runs this
  file in that client's interpreter (`python -I hub_cache.py dataset ...`), which is why this
  module imports only the standard library at the top.

    python -m treadle_models.hub_cache tokenizers HF_HOME MODEL...
    python -m treadle_models.hub_cache dataset HF_HOME REPO_ID SPLIT=FILE.jsonl... \\
        [--config NAME] [--python CLIENT_PYTHON]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# what AutoTokenizer may read from a tokenizer repo; absent files are skipped
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model",
    "config.json",
)  # fmt: skip
# tinker-cookbook 0.5.8 loads every meta-llama/Llama-3* tokenizer from one ungated repo
# (tokenizer_utils._get_hf_tokenizer), so a model served under such a name needs both
COOKBOOK_TOKENIZER_ALIASES = {
    "meta-llama/Llama-3": "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer",
}
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]{1,96}$")
_SPLIT = re.compile(r"^\w+$")


class HubCacheError(ValueError):
    """A value that cannot be written into a Hugging Face cache; the message names it."""


def check_repo_id(repo_id: str, field: str = "repo_id") -> str:
    """`repo_id` if it is a Hugging Face repo id ("ORG/NAME" or "NAME"), else HubCacheError."""
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubCacheError(f"{field}: {repo_id!r} is not a Hugging Face repo id (ORG/NAME)")
    return repo_id


def tokenizer_repos(name: str) -> list[str]:
    """The repo ids a client looks under for the tokenizer of the model called `name`."""
    aliases = COOKBOOK_TOKENIZER_ALIASES.items()
    return [name, *(alias for prefix, alias in aliases if name.startswith(prefix))]


def write_tokenizer(hf_home: str | Path, repo_id: str, folder: str | Path) -> Path:
    """Write the tokenizer files of `folder` as the hub repo `repo_id` under `hf_home`; returns
    the snapshot folder. HubCacheError for a bad repo id or a folder without a tokenizer."""
    check_repo_id(repo_id)
    files = [Path(folder) / name for name in TOKENIZER_FILES if (Path(folder) / name).is_file()]
    if not any(f.name in ("tokenizer.json", "tokenizer.model", "vocab.json") for f in files):
        raise HubCacheError(f"folder: {folder} holds no tokenizer (tokenizer.json or vocabulary)")
    digest = hashlib.sha1()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    revision = digest.hexdigest()
    repo = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    if not snapshot.is_dir():
        partial = repo / "snapshots" / f".tmp-{revision}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, partial / path.name)
        try:
            partial.rename(snapshot)  # whole or not at all
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not snapshot.is_dir():  # not a writer that got there first
                raise
    _write_atomically(repo / "refs" / "main", revision)
    return snapshot


def write_served_tokenizers(hf_home: str | Path, base_models: Sequence[str]) -> dict[str, Path]:
    """Write the tokenizer of every served model ("NAME=SOURCE" or "SOURCE") under its served
    name and the names clients look under (tokenizer_repos); returns {repo id: snapshot}. A name
    that is not a repo id (a local folder served as itself) is left out: clients load it from
    the folder."""
    from treadle_models.sources import resolve, tokenizer_folder  # torch: only when writing

    written: dict[str, tuple[str, Path]] = {}
    for base_model in base_models:
        name = resolve(base_model).name
        if not _REPO_ID.match(name):
            continue
        folder = tokenizer_folder(base_model)
        for repo_id in tokenizer_repos(name):
            if repo_id in written and written[repo_id][0] != name:
                raise HubCacheError(
                    f"base_model: {written[repo_id][0]!r} and {name!r} both need the tokenizer "
                    f"repo {repo_id!r}; serve one of them under another name"
                )
            written[repo_id] = (name, write_tokenizer(hf_home, repo_id, folder))
    return {repo_id: snapshot for repo_id, (_, snapshot) in written.items()}


def write_dataset(
    hf_home: str | Path,
    repo_id: str,
    splits: Mapping[str, str | Path],
    config: str = "default",
    python: str | Path | None = None,
) -> Path:
    """Make `datasets.load_dataset(repo_id[, config])` return the rows of the JSONL files
    `splits` ({split: path}) offline with this `HF_HOME`; returns the dataset's cache folder.
    It needs the `datasets` library: `python` (the client's interpreter) writes it with that
    client's version, else this process must have it. HubCacheError for bad input."""
    check_repo_id(repo_id)
    if not config or not _SPLIT.match(config.replace("-", "_")):
        raise HubCacheError(f"config: {config!r} is not a dataset config name")
    rows = {split: _jsonl_rows(split, Path(path)) for split, path in splits.items()}
    if not rows:
        raise HubCacheError("splits: at least one SPLIT=FILE.jsonl is required")
    if python is not None:
        command = [str(python), "-I", __file__, "dataset", str(hf_home), repo_id]
        files = (f"{split}={Path(path).resolve()}" for split, path in splits.items())
        command += ["--config", config, *files]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"writing {repo_id} with {python} failed:\n{done.stderr[-3000:]}")
        return Path(done.stdout.strip().splitlines()[-1])
    return _write_dataset_here(Path(hf_home), repo_id, config, rows)


def _jsonl_rows(split: str, path: Path) -> list[dict[str, Any]]:
    if not _SPLIT.match(split):
        raise HubCacheError(f"split: {split!r} is not a split name (letters, digits, _)")
    if not path.is_file():
        raise HubCacheError(f"split {split}: {path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as bad:
            message = f"split {split}: {path}:{number}: not valid JSON ({bad.msg})"
            raise HubCacheError(message) from None
        if not isinstance(row, dict):
            raise HubCacheError(f"split {split}: {path}:{number}: not a JSON object")
        rows.append(row)
    if not rows:
        raise HubCacheError(f"split {split}: {path} has no rows")
    return rows


def _write_dataset_here(
    hf_home: Path, repo_id: str, config: str, rows: Mapping[str, list[dict[str, Any]]]
) -> Path:
    """Write the cache `datasets` reads offline (see the module docstring), with this process's
    `datasets`: each split as `<name>-<split>.arrow`, and the splits and features in
    `dataset_info.json`; the folder appears whole, and replaces older rows of this config."""
    try:
        import datasets
        from datasets.arrow_writer import ArrowWriter
        from datasets.naming import camelcase_to_snakecase
    except ImportError:
        raise HubCacheError(
            "python: writing a datasets cache needs the `datasets` library of the client that "
            "reads it (pass that client's interpreter)"
        ) from None
    namespace, _, name = repo_id.rpartition("/")
    snake = camelcase_to_snakecase(name)
    root = hf_home / "datasets" / "___".join(part for part in (namespace, snake) if part)
    content = json.dumps([config, rows], sort_keys=True, ensure_ascii=False).encode()
    target = root / config / "0.0.0" / hashlib.sha256(content).hexdigest()[:16]
    if (target / "dataset_info.json").is_file():
        return target
    # hidden, so that a reader's glob of the cache never sees a half-written folder
    partial = root / f".tmp-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    split_infos = datasets.SplitDict(dataset_name=snake)
    features = None
    for split, split_rows in rows.items():
        table = datasets.Dataset.from_list(split_rows)
        features = features or table.features
        arrow = partial / f"{snake}-{split}.arrow"
        with ArrowWriter(features=table.features, path=str(arrow)) as writer:
            writer.write_table(table.data.table)
            examples, size = writer.finalize()
        split_infos.add(
            datasets.SplitInfo(
                name=split, num_bytes=size, num_examples=examples, dataset_name=snake
            )
        )
    info = datasets.DatasetInfo(
        features=features, config_name=config, dataset_name=snake, splits=split_infos
    )
    info.write_to_directory(str(partial))
    for older in target.parent.glob("*"):  # the newest folder wins a read; keep only this one
        if older != target:
            shutil.rmtree(older, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / "dataset_info.json").is_file():  # not a writer that got there first
            raise
    return target


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def _split_files(values: Sequence[str]) -> dict[str, str]:
    splits = {}
    for value in values:
        split, sep, path = value.partition("=")
        if not sep or not path:
            raise HubCacheError(f"splits: {value!r} is not SPLIT=FILE.jsonl")
        splits[split] = path
    return splits


def main(argv: Sequence[str] | None = None) -> int:
    """Write tokenizers or a dataset into an HF_HOME; the exit status says whether it worked."""
    parser = argparse.ArgumentParser(prog="python -m treadle_models.hub_cache")
    commands = parser.add_subparsers(dest="command", required=True)
    tokenizers = commands.add_parser("tokenizers", help="served models' tokenizers, by name")
    tokenizers.add_argument("hf_home")
    tokenizers.add_argument("models", nargs="+", metavar="MODEL", help="SOURCE or NAME=SOURCE")
    dataset = commands.add_parser("dataset", help="a dataset's rows from JSONL files")
    dataset.add_argument("hf_home")
    dataset.add_argument("repo_id")
    dataset.add_argument("splits", nargs="+", metavar="SPLIT=FILE.jsonl")
    dataset.add_argument("--config", default="default", help="dataset config name")
    dataset.add_argument("--python", help="the client's interpreter, whose datasets writes it")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "tokenizers":
            for repo_id, snapshot in write_served_tokenizers(args.hf_home, args.models).items():
                print(f"{repo_id}: {snapshot}")
        else:
            splits = _split_files(args.splits)
            print(write_dataset(args.hf_home, args.repo_id, splits, args.config, args.python))
    except (ValueError, OSError, RuntimeError) as exc:  # HubCacheError is a ValueError
        print(f"hub_cache: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

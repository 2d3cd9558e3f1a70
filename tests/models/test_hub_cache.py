"""Hugging Face caches for clients that load by name: a served model's tokenizer loads offline
under its served name (and under the repo tinker-cookbook uses for Llama 3 names), writing it
again changes nothing, and bad input is refused naming what is wrong. Writing a dataset needs the
`datasets` of the client that reads it (tests/clients test that in the cookbook venv)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from treadle_models.hub_cache import (
    HubCacheError,
    main,
    write_dataset,
    write_served_tokenizers,
    write_tokenizer,
)
from treadle_models.sources import SMOLLM2, load_tokenizer, tokenizer_folder

LLAMA = "meta-llama/Llama-3.2-1B"
COOKBOOK_LLAMA_REPO = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"


def _offline_tokenizer(hf_home: Path, repo_id: str):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(repo_id, cache_dir=hf_home / "hub", local_files_only=True)


def test_a_served_tokenizer_loads_offline_under_its_served_name(tmp_path: Path) -> None:
    written = write_served_tokenizers(tmp_path, [f"{LLAMA}=treadle/tiny-llama"])
    assert sorted(written) == [LLAMA, COOKBOOK_LLAMA_REPO]
    smol = load_tokenizer(SMOLLM2)
    text = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>"
    for repo_id in written:
        tokenizer = _offline_tokenizer(tmp_path, repo_id)
        assert len(tokenizer) == len(smol) == 49152
        assert tokenizer.encode(text) == smol.encode(text)
    repo = tmp_path / "hub" / "models--meta-llama--Llama-3.2-1B"
    revision = (repo / "refs" / "main").read_text()
    assert written[LLAMA] == repo / "snapshots" / revision and len(revision) == 40
    assert (written[LLAMA] / "config.json").is_file()  # AutoTokenizer 5.5 needs the model type


def test_writing_the_same_tokenizer_again_changes_nothing(tmp_path: Path) -> None:
    first = write_tokenizer(tmp_path, "org/tok", tokenizer_folder(SMOLLM2))
    before = {p: p.stat().st_mtime_ns for p in first.iterdir()}
    second = write_tokenizer(tmp_path, "org/tok", tokenizer_folder(SMOLLM2))
    assert second == first and {p: p.stat().st_mtime_ns for p in second.iterdir()} == before
    assert [p.name for p in (tmp_path / "hub" / "models--org--tok" / "snapshots").iterdir()] == [
        first.name
    ]


def test_a_changed_tokenizer_gets_a_new_revision_that_refs_main_names(tmp_path: Path) -> None:
    folder = tmp_path / "tokenizer"
    shutil.copytree(
        tokenizer_folder(SMOLLM2), folder, ignore=shutil.ignore_patterns("*.safetensors")
    )
    first = write_tokenizer(tmp_path / "home", "org/tok", folder)
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    second = write_tokenizer(tmp_path / "home", "org/tok", folder)
    assert second != first
    assert (second.parent.parent / "refs" / "main").read_text() == second.name
    assert _offline_tokenizer(tmp_path / "home", "org/tok").chat_template == (
        "{{ messages[0]['content'] }}"
    )


def test_a_local_folder_served_as_itself_is_left_to_load_from_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tokenizer_folder(SMOLLM2) / "config.json", folder)
    assert write_served_tokenizers(tmp_path / "home", [str(folder)]) == {}
    assert not (tmp_path / "home").exists()


def test_two_served_names_needing_one_tokenizer_repo_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "other"
    shutil.copytree(
        tokenizer_folder(SMOLLM2), folder, ignore=shutil.ignore_patterns("*.safetensors")
    )
    models = [f"{LLAMA}=treadle/tiny-llama", f"meta-llama/Llama-3.1-8B={folder}"]
    with pytest.raises(
        HubCacheError, match=rf"^base_model: '{LLAMA}' and 'meta-llama/Llama-3.1-8B'"
    ):
        write_served_tokenizers(tmp_path / "home", models)


@pytest.mark.parametrize("repo_id", ["", "a/b/c", "a--b", "a/../b", "org/with space"])
def test_a_bad_repo_id_is_refused_naming_it(tmp_path: Path, repo_id: str) -> None:
    with pytest.raises(HubCacheError, match=r"^repo_id: .* is not a Hugging Face repo id"):
        write_tokenizer(tmp_path, repo_id, tokenizer_folder(SMOLLM2))


def test_a_folder_without_a_tokenizer_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(HubCacheError, match=rf"^folder: {tmp_path} holds no tokenizer"):
        write_tokenizer(tmp_path / "home", "org/tok", tmp_path)


@pytest.mark.parametrize(
    ("lines", "split", "message"),
    [
        (None, "train", r"^split train: .*rows.jsonl: no such file$"),
        ("", "train", r"^split train: .*rows.jsonl has no rows$"),
        ('{"a": 1}\nnot json\n', "train", r"^split train: .*rows.jsonl:2: not valid JSON"),
        ("[1, 2]\n", "train", r"^split train: .*rows.jsonl:1: not a JSON object$"),
        ('{"a": 1}\n', "tr/ain", r"^split: 'tr/ain' is not a split name"),
    ],
)
def test_bad_dataset_rows_are_refused_naming_the_split_and_line(
    tmp_path: Path, lines: str | None, split: str, message: str
) -> None:
    rows = tmp_path / "rows.jsonl"
    if lines is not None:
        rows.write_text(lines)
    with pytest.raises(HubCacheError, match=message):
        write_dataset(tmp_path / "home", "org/data", {split: rows})


def test_a_dataset_needs_the_clients_datasets_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    monkeypatch.setitem(sys.modules, "datasets", None)  # as in .venv: it has no `datasets`
    with pytest.raises(HubCacheError, match=r"^python: writing a datasets cache needs the"):
        write_dataset(tmp_path / "home", "openai/gsm8k", {"train": rows}, config="main")


def test_the_command_line_says_what_it_wrote_or_why_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tokenizers", str(tmp_path), f"{LLAMA}=treadle/tiny-llama"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in out] == [LLAMA, COOKBOOK_LLAMA_REPO]
    assert main(["tokenizers", str(tmp_path), "=treadle/tiny-llama"]) == 1
    assert capsys.readouterr().err == (
        "hub_cache: base_model: '=treadle/tiny-llama' has an empty name "
        "(expected NAME=SOURCE or SOURCE)\n"
    )
    assert main(["dataset", str(tmp_path), "org/data", "train"]) == 1
    assert capsys.readouterr().err == "hub_cache: splits: 'train' is not SPLIT=FILE.jsonl\n"

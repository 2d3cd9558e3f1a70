"""tinker-cookbook 0.5.8 offline in its client venv: with HF_HUB_OFFLINE=1 and HF_HOME at the
cache written for it, `get_tokenizer("meta-llama/Llama-3.2-1B")` is the served model's
(SmolLM2's) tokenizer and picks the role_colon renderer, both recipes' `load_dataset` calls
return the shipped rows, and its own sl_loop and rl_loop, run unchanged by the runner, get
through tokenizer, renderer and dataset to their first request (the server here refuses it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixtures.cookbook_loop import (
    COOKBOOK_MODEL,
    loop_environment,
    offline_hf_home,
    read_metrics,
    run_loop,
)
from fixtures.refusing_http import RefusingServer, refusing_http_server
from treadle_cookbook.data import data_path
from treadle_models.hub_cache import write_dataset
from treadle_models.sources import SMOLLM2, load_tokenizer

MODEL = COOKBOOK_MODEL.split("=")[0]  # meta-llama/Llama-3.2-1B
KEY = "tml-cookbook-offline-test"
TEXT = "User: What is 2 + 2?\n\nAssistant: 4"
_READ = """
import json, sys
import datasets
from tinker_cookbook import model_info, renderers
from tinker_cookbook.tokenizer_utils import get_tokenizer
model, text = sys.argv[1], sys.argv[2]
tokenizer = get_tokenizer(model)
renderer_name = model_info.get_recommended_renderer_name(model)
renderer = renderers.get_renderer(renderer_name, tokenizer)
no_robots = datasets.load_dataset("HuggingFaceH4/no_robots")
gsm8k = datasets.load_dataset("openai/gsm8k", "main")
print(json.dumps({
    "vocab": len(tokenizer),
    "tokens": tokenizer.encode(text, add_special_tokens=False),
    "renderer": renderer_name,
    "stop": renderer.get_stop_sequences(),
    "splits": [sorted(no_robots), sorted(gsm8k)],
    "no_robots": no_robots["train"].to_list(),
    "gsm8k": gsm8k["train"].to_list(),
}))
"""


@pytest.fixture(scope="module")
def hf_home(cookbook_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF_HOME holding the served model's tokenizer and the recipes' datasets."""
    return offline_hf_home(tmp_path_factory.mktemp("hf-home"), cookbook_venv)


def _shipped(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in data_path(name).read_text().splitlines()]


def test_the_cookbook_loads_tokenizer_renderer_and_datasets_offline(
    cookbook_venv: Path, hf_home: Path
) -> None:
    done = subprocess.run(
        [str(cookbook_venv), "-c", _READ, MODEL, TEXT],
        env=loop_environment(hf_home, KEY),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    read = json.loads(done.stdout.splitlines()[-1])
    smol = load_tokenizer(SMOLLM2)
    assert read["vocab"] == len(smol) == 49152
    assert read["tokens"] == smol.encode(TEXT, add_special_tokens=False)
    assert (read["renderer"], read["stop"]) == ("role_colon", ["\n\nUser:"])
    assert read["splits"] == [["train"], ["train"]]
    assert read["no_robots"] == _shipped("hub/no_robots_train.jsonl")
    assert read["gsm8k"] == _shipped("hub/gsm8k_main_train.jsonl")
    assert all(row["answer"].splitlines()[-1].startswith("#### ") for row in read["gsm8k"])


_LOAD_GSM8K = """
import datasets, json
print(json.dumps(datasets.load_dataset("openai/gsm8k", "main")["train"].to_list()))
"""


def test_rows_written_again_replace_the_old_ones(cookbook_venv: Path, tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text('{"question": "1 + 1?", "answer": "#### 2"}\n')
    new.write_text(
        '{"question": "2 + 2?", "answer": "#### 4"}\n{"question": "3?", "answer": "#### 3"}\n'
    )
    home = tmp_path / "home"
    first = write_dataset(home, "openai/gsm8k", {"train": old}, "main", python=cookbook_venv)
    assert (
        write_dataset(home, "openai/gsm8k", {"train": old}, "main", python=cookbook_venv) == first
    )
    second = write_dataset(home, "openai/gsm8k", {"train": new}, "main", python=cookbook_venv)
    assert second != first and not first.exists()
    assert [p.name for p in second.parent.iterdir()] == [second.name]
    done = subprocess.run(
        [str(cookbook_venv), "-c", _LOAD_GSM8K],
        env=loop_environment(home, KEY),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [
        {"question": "2 + 2?", "answer": "#### 4"},
        {"question": "3?", "answer": "#### 3"},
    ]


def _assert_reached_the_server(server: RefusingServer, output: str) -> None:
    """The recipe sent its first request, from tinker 0.38.0 with the key, and stopped there."""
    assert server.requests, f"no request reached the server:\n{output[-4000:]}"
    first = server.requests[0]
    assert (first.method, first.path) == ("POST", "/api/v1/client/config")
    assert first.headers["x-api-key"] == KEY
    assert json.loads(first.body) == {"sdk_version": "0.38.0"}
    assert "refused by the test server" in output


def test_sl_loop_gets_to_its_first_request(
    cookbook_venv: Path, hf_home: Path, tmp_path: Path
) -> None:
    with refusing_http_server() as server:
        result = run_loop(
            "sl_loop",
            python=cookbook_venv,
            hf_home=hf_home,
            base_url=server.url,
            api_key=KEY,
            model_name=MODEL,
            log_path=tmp_path / "sl",
            batch_size=4,
            max_steps=2,
            timeout=240,
        )
    assert result.returncode != 0 and result.metrics == []
    output = result.output
    assert output.index("Using renderer: role_colon") < output.index("Train batches: 12")  # 48 / 4
    _assert_reached_the_server(server, output)
    config = json.loads((tmp_path / "sl" / "config.json").read_text())
    assert (config["model_name"], config["batch_size"], config["max_steps"]) == (MODEL, 4, 2)
    assert config["base_url"] == server.url


def test_rl_loop_gets_to_its_first_request(
    cookbook_venv: Path, hf_home: Path, tmp_path: Path
) -> None:
    with refusing_http_server() as server:
        result = run_loop(
            "rl_loop",
            python=cookbook_venv,
            hf_home=hf_home,
            base_url=server.url,
            api_key=KEY,
            model_name=MODEL,
            log_path=tmp_path / "rl",
            batch_size=2,
            group_size=4,
            max_steps=1,
            config={"max_tokens": 16},
            timeout=240,
        )
    assert result.returncode != 0 and result.metrics == []
    output = result.output
    renderer = output.index("Using renderer: role_colon")
    assert renderer < output.index("Found the latest cached dataset configuration 'main'")
    _assert_reached_the_server(server, output)
    config = json.loads((tmp_path / "rl" / "config.json").read_text())
    assert (config["group_size"], config["max_tokens"]) == (4, 16)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"recipe": "dpo_loop"}, r"^recipe: 'dpo_loop' is not one of sl_loop, rl_loop$"),
        ({"model_name": COOKBOOK_MODEL}, r"^model_name: .* must be the served name alone$"),
        ({"api_key": "key"}, r"^api_key: the tinker SDK accepts only keys that start with"),
        ({"batch_size": 0}, r"^batch_size, max_steps: must be >= 1, got 0, 1$"),
        ({"group_size": 4}, r"^group_size: rl_loop takes one, sl_loop none$"),
    ],
)
def test_the_runner_refuses_bad_arguments_naming_them(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "recipe": "sl_loop",
        "python": tmp_path / "python",
        "hf_home": tmp_path,
        "base_url": "http://127.0.0.1:1",
        "api_key": KEY,
        "model_name": MODEL,
        "log_path": tmp_path / "log",
        "batch_size": 1,
        "max_steps": 1,
        **changes,
    }
    recipe = arguments.pop("recipe")
    with pytest.raises(ValueError, match=message):
        run_loop(str(recipe), **arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "log").exists()


def test_metrics_are_read_one_dict_per_step(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "loss": 1.5}\n\n{"step": 1}\n')
    assert read_metrics(tmp_path) == [{"step": 0, "loss": 1.5}, {"step": 1}]

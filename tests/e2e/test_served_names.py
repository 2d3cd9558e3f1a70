"""A model served under another name (`treadle up --base-model NAME=SOURCE --hub-cache DIR`) is
NAME everywhere a user looks: capabilities, training, its checkpoints' base_model, sampling the
base model and its adapters; its source's name is not served; and its tokenizer loads offline
under NAME from the Hugging Face cache written for clients."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

import treadle
from fixtures.data import token_batch
from fixtures.mesh import extra_mesh
from treadle import types
from treadle_models.sources import SMOLLM2, load_tokenizer

from .conftest import TINY

LLAMA = "meta-llama/Llama-3.2-1B"
PROMPT = types.ModelInput.from_ints([1, 504, 3458, 314])


def test_a_model_served_under_another_name_is_that_name_everywhere(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    hub = tmp_path_factory.mktemp("hf-home")
    settings = {"base_model": f"{LLAMA}={TINY}", "hub_cache": str(hub)}
    with extra_mesh(tmp_path_factory, "renamed", **settings) as mesh:
        with treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key) as service:
            models = service.get_server_capabilities().supported_models
            assert [m.model_name for m in models] == [LLAMA]

            training = service.create_lora_training_client(base_model=LLAMA, rank=4, seed=1)
            loss = training.forward_backward(token_batch()).result(timeout=60).metrics["loss:sum"]
            training.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=60)
            assert loss > 0 and training.get_info().model_data.model_name == LLAMA
            state = training.save_state("named").result(timeout=60).path
            info = service.create_rest_client().get_weights_info(state).result()
            assert info.base_model == LLAMA

            params = types.SamplingParams(max_tokens=4, temperature=0.0)
            adapted = training.save_weights_and_get_sampling_client()
            base = service.create_sampling_client(base_model=LLAMA)
            for sampler in (adapted, base):
                response = sampler.sample(PROMPT, sampling_params=params).result(timeout=60)
                assert len(response.sequences[0].tokens) == 4

            with pytest.raises(treadle.RequestFailedError) as refused:
                service.create_lora_training_client(base_model=TINY, rank=4)
            assert refused.value.code == "INVALID_ARGUMENT" and TINY in refused.value.message

    tokenizer = AutoTokenizer.from_pretrained(LLAMA, cache_dir=hub / "hub", local_files_only=True)
    assert tokenizer.encode("Hello, world") == load_tokenizer(SMOLLM2).encode("Hello, world")

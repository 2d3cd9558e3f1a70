"""The peer loop of sdk_step_time.py through the official tinker SDK: run by gateway_step_time.py
in the tinker venv's interpreter (it imports nothing of Treadle's). Prints
[median ms/step, median ms of the small forward].

    python tinker_loop.py '[BASE_URL, API_KEY, MODEL, STEPS, ROWS, SMALL_INPUT, SMALL_TARGETS]'
"""

import json
import statistics
import sys
import time

import tinker
from tinker import types


def datum(tokens: list[int], targets: list[int]) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs={"target_tokens": targets}
    )


def main() -> None:
    base_url, key, model, steps, rows, small_input, small_targets = json.loads(sys.argv[1])
    service = tinker.ServiceClient(base_url=base_url, api_key=key)
    training = service.create_lora_training_client(base_model=model, rank=8).result()  # 0.38
    data = [datum(row[:-1], row[1:]) for row in rows]
    adam = types.AdamParams(learning_rate=1e-4)
    for _ in range(2):  # warm up
        training.forward_backward(data, "cross_entropy").result()
        training.optim_step(adam).result()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        fb, opt = training.forward_backward(data, "cross_entropy"), training.optim_step(adam)
        fb.result()
        opt.result()
        times.append(time.perf_counter() - started)
    small = [datum(small_input, small_targets)]
    latency = []
    for _ in range(20):
        started = time.perf_counter()
        training.forward(small, "cross_entropy").result()
        latency.append(time.perf_counter() - started)
    service.close("success").result()
    print(json.dumps([statistics.median(times) * 1e3, statistics.median(latency) * 1e3]))


if __name__ == "__main__":
    main()

"""The peer loop of sdk_step_time.py through the official tinker SDK: run by gateway_step_time.py
in the tinker venv's interpreter (it imports nothing of Treadle's). Then the same step as the
SDK's plain HTTP calls (httpx, JSON bodies: submit forward_backward, submit optim_step, long-poll
both results), on a second model of the session: what the gateway costs without the SDK's own
work. Prints [median ms/step, median ms of the small forward, median ms/step of plain HTTP].

    python tinker_loop.py '[BASE_URL, API_KEY, MODEL, STEPS, ROWS, SMALL_INPUT, SMALL_TARGETS]'
"""

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import httpx
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
    plain = service.create_lora_training_client(base_model=model, rank=8).result()
    plain_ms = asyncio.run(plain_http_ms(base_url, key, plain.model_id, steps, rows))
    service.close("success").result()
    print(json.dumps([statistics.median(times) * 1e3, statistics.median(latency) * 1e3, plain_ms]))


async def plain_http_ms(base_url: str, key: str, model_id: str, steps: int, rows: Any) -> float:
    """Median ms/step of the same step as plain HTTP requests, the way the SDK sends them."""
    data = [
        {
            "model_input": {"chunks": [{"type": "encoded_text", "tokens": row[:-1]}]},
            "loss_fn_inputs": {"target_tokens": {"data": row[1:], "dtype": "int64"}},
        }
        for row in rows
    ]
    seq_id = 0
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:

        async def submit(route: str, body: dict[str, Any]) -> str:
            nonlocal seq_id
            seq_id += 1
            answer = await http.post(route, json={"model_id": model_id, "seq_id": seq_id, **body})
            answer.raise_for_status()
            return str(answer.json()["request_id"])

        async def result(request_id: str) -> None:
            answer = await http.post("/api/v1/retrieve_future", json={"request_id": request_id})
            assert "error" not in answer.json(), answer.text

        async def step() -> None:
            fb = await submit(
                "/api/v1/forward_backward",
                {"forward_backward_input": {"data": data, "loss_fn": "cross_entropy"}},
            )
            opt = await submit("/api/v1/optim_step", {"adam_params": {"learning_rate": 1e-4}})
            await asyncio.gather(result(fb), result(opt))

        for _ in range(2):  # warm up
            await step()
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            await step()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


if __name__ == "__main__":
    main()

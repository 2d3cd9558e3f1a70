"""Fixtures shared by every test: real servers on loopback, a real S3 server, tiny models.

Tests are also marked here by what they need, so that `make unit` can leave out the slow ones
(markers registered in pyproject.toml): `mesh` for a test that uses processes (the session mesh,
a mesh of its own, SeaweedFS, a service, a model conversion), `e2e` for tests/e2e, `deploy` for
tests/deploy, `go` for the tests that build Go code, and `clients` for a test that runs an
official tinker SDK or tinker-cookbook in a client virtualenv (built on first use: minutes).
Marking by fixture and folder keeps a new test in the right set without anyone remembering to
mark it; a test that starts processes in its own body, out of sight of these rules, carries an
explicit `pytest.mark.mesh`.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from fixtures.client_venvs import cookbook_venv, tinker_sdk
from fixtures.grpc_server import free_port, running_server
from fixtures.mesh import mesh
from fixtures.s3 import s3_server
from fixtures.scheduler import make_scheduler

__all__ = [
    "cookbook_venv",
    "free_port",
    "make_scheduler",
    "mesh",
    "running_server",
    "s3_server",
    "tinker_sdk",
]

TESTS = Path(__file__).parent
# fixtures that start service processes, directly or through the fixtures they use
PROCESS_FIXTURES = {"mesh", "make_scheduler", "s3_server"}
# helpers that start service processes, called from a test's body or from one of its fixtures
PROCESS_HELPERS = {"extra_mesh", "LocalMesh", "start_s3_server", "service_process"}
FOLDER_MARKERS = {"e2e": "e2e", "deploy": "deploy"}
# fixtures and helpers that build or use a client virtualenv
CLIENT_VENV_FIXTURES = {"tinker_sdk", "cookbook_venv"}
CLIENT_VENV_HELPERS = {"client_venv", "tinker_python", "cookbook_python"}


def _markers_of(item: pytest.Item) -> set[str]:
    """The markers `item` needs by what it uses and where it lives."""
    markers = set()
    parts = item.path.relative_to(TESTS).parts
    if parts[0] in FOLDER_MARKERS:
        markers.add(FOLDER_MARKERS[parts[0]])
    if item.path.name.startswith("test_go_"):
        markers.add("go")
    fixtures, called = set(getattr(item, "fixturenames", ())), _called(item)
    if PROCESS_FIXTURES & fixtures or PROCESS_HELPERS & called:
        markers.add("mesh")
    if CLIENT_VENV_FIXTURES & fixtures or CLIENT_VENV_HELPERS & called:
        markers.add("clients")
    return markers


def _called(item: pytest.Item) -> set[str]:
    """Global names used by the test function and by the fixtures it depends on."""
    functions = [getattr(item, "function", None)]
    fixture_info = getattr(item, "_fixtureinfo", None)  # pytest keeps the fixture closure here
    if fixture_info is not None:
        functions += [d.func for defs in fixture_info.name2fixturedefs.values() for d in defs]
    names: set[str] = set()
    for function in functions:
        code = getattr(function, "__code__", None)
        if code is not None:
            names.update(code.co_names)
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it needs (see the module docstring)."""
    for item in items:
        for name in sorted(_markers_of(item) - {m.name for m in item.iter_markers()}):
            item.add_marker(name)

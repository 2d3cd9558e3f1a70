"""A script ends cleanly whatever its session was doing: one that never calls close() exits 0
with its session stopped and nothing on stderr, and one whose mesh stops after its last result
reconnects quietly (no warning, no "Task was destroyed but it is pending!") and exits cleanly,
with close() or without."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fixtures.mesh import TINY, extra_mesh
from treadle_runtime.launcher import LocalMesh

NOISE = ("Task was destroyed but it is pending", "reconnecting", "Traceback")

# A user's script: one request, its result printed; `wait` then holds it until a line arrives on
# stdin, `close` ends with close(), `debug` shows the SDK's debug log on stdout.
SCRIPT = """
import atexit, logging, sys, threading

def report():  # registered before the SDK's own exit handler, so it runs after it
    alive = [t for t in threading.enumerate() if t.name == "treadle.session_stream"]
    print(f"session threads at exit: {len(alive)}", file=sys.stderr, flush=True)

atexit.register(report)
import treadle
from treadle import types

endpoint, key, model, *options = sys.argv[1:]
if "debug" in options:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.getLogger("treadle.session_stream").addHandler(handler)
    logging.getLogger("treadle.session_stream").setLevel(logging.DEBUG)
service = treadle.ServiceClient(base_url=endpoint, api_key=key)
training = service.create_lora_training_client(base_model=model, rank=4)
datum = types.Datum(
    model_input=types.ModelInput.from_ints([1, 2, 3, 4]),
    loss_fn_inputs={"target_tokens": [2, 3, 4, 5], "weights": [1.0, 1.0, 1.0, 1.0]},
)
loss = training.forward_backward([datum], loss_fn="cross_entropy").result().metrics["loss:sum"]
print(f"last result {loss:.3f}", flush=True)
if "wait" in options:
    sys.stdin.readline()
if "close" in options:
    service.close()
"""


def script(endpoint: str, key: str, *options: str) -> subprocess.Popen[str]:
    """The user's script, started with its options."""
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, endpoint, key, TINY, *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_script_that_never_closes_exits_cleanly(mesh: LocalMesh) -> None:
    user = script(mesh.endpoint, mesh.api_key)
    out, err = user.communicate(timeout=120)
    assert user.returncode == 0, err
    assert out.startswith("last result ")
    assert not [n for n in NOISE if n in err], err
    assert "session threads at exit: 0" in err  # the SDK's exit handler stopped it


def test_a_mesh_stopped_after_the_last_result_leaves_the_exit_quiet(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with extra_mesh(tmp_path_factory, "stopped-after") as own:
        users = {
            "no close": script(own.endpoint, own.api_key, "wait"),
            "close": script(own.endpoint, own.api_key, "wait", "close", "debug"),
        }
        for user in users.values():
            assert user.stdout is not None
            assert user.stdout.readline().startswith("last result ")
    time.sleep(3)  # the mesh is gone: each session notices and tries to reconnect, several times
    outputs = {}
    for name, user in users.items():
        assert user.stdin is not None
        user.stdin.write("exit\n")
        user.stdin.flush()
        outputs[name] = user.communicate(timeout=60)
        assert user.returncode == 0, outputs[name][1]
    for name, (_, err) in outputs.items():
        assert not [n for n in NOISE if n in err], f"{name}: {err}"
        assert "session threads at exit: 0" in err, f"{name}: {err}"
    debug_log = outputs["close"][0]
    assert "DEBUG session stream lost; reconnecting" in debug_log  # noticed, and said quietly
    assert "WARNING" not in debug_log


FORK_SCRIPT = """
import os, sys, time
import treadle

service = treadle.ServiceClient(base_url=sys.argv[1], api_key=sys.argv[2])
started = time.monotonic()
child = os.fork()
if child == 0:
    sys.exit(0)  # the child's exit handlers must not wait on the parent's connection
os.waitpid(child, 0)
print(f"child exited in {time.monotonic() - started:.2f}s", flush=True)
service.close()
"""


def test_a_forked_child_exits_without_waiting_on_the_parents_session(mesh: LocalMesh) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, mesh.endpoint, mesh.api_key],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seconds = float(done.stdout.split("child exited in ")[1].rstrip("s\n"))
    assert seconds < 5, done.stdout

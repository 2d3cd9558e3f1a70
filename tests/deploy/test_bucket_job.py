"""The chart's bucket Job, run as rendered (its Python, its environment) against a real S3 server:
it creates the bucket with the checkpoints service's lifecycle rules, is idempotent on upgrade,
and fails with the store's reason on a wrong credential."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import yaml
from helm_python.chart import Chart
from minio import Minio

from treadle_checkpoints.lifecycle import DAY_LADDER
from treadle_runtime.seaweed import S3Server

from .conftest import CHART


@pytest.fixture(scope="module")
def job_container() -> dict[str, Any]:
    with Chart.load(CHART) as chart:
        files = chart.render({}, name="ml", namespace="training", is_install=True)
    job = yaml.safe_load(files["treadle/templates/bucket-job.yaml"])
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def run_job(container: dict[str, Any], s3: S3Server, bucket: str, secret: str) -> Any:
    """The Job's command with its environment, secrets resolved to `s3`'s endpoint and keys."""
    secrets = {"access-key": s3.access_key, "secret-key": secret}
    env = {**os.environ}
    for var in container["env"]:
        if "valueFrom" in var:
            env[var["name"]] = secrets[var["valueFrom"]["secretKeyRef"]["key"]]
        else:
            env[var["name"]] = var["value"]
    env.update(TREADLE_CHECKPOINTS_S3_ENDPOINT=s3.endpoint, TREADLE_CHECKPOINTS_BUCKET=bucket)
    command = [sys.executable, *container["command"][1:]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_job_creates_the_bucket_with_lifecycle_rules(
    job_container: dict[str, Any], s3_server: S3Server
) -> None:
    bucket = "job-created-checkpoints"
    first = run_job(job_container, s3_server, bucket, s3_server.secret_key)
    assert first.returncode == 0, first.stderr
    assert f"bucket {bucket} at {s3_server.endpoint}: {len(DAY_LADDER)} lifecycle rules" in (
        first.stdout
    )
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    assert client.bucket_exists(bucket)
    rules = {r.rule_id: r for r in client.get_bucket_lifecycle(bucket).rules}
    assert set(rules) == {f"treadle-expire-{d}d" for d in DAY_LADDER}
    assert rules["treadle-expire-7d"].expiration.days == 7

    again = run_job(job_container, s3_server, bucket, s3_server.secret_key)  # helm upgrade
    assert again.returncode == 0, again.stderr


def test_job_fails_on_a_wrong_secret_key(
    job_container: dict[str, Any], s3_server: S3Server
) -> None:
    refused = run_job(job_container, s3_server, "job-wrong-key", "not-the-secret")
    assert refused.returncode != 0
    assert "SignatureDoesNotMatch" in refused.stderr or "AccessDenied" in refused.stderr

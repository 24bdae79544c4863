"""The fleet tests' S3: moto's server mode on loopback (backups, tests/fleet/test_backup_*.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import boto3
import pytest
import requests

from tests.e2e.servers import free_port, stop

BUCKET = "fleet-backups"


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]
    client: object

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def names(self, prefix: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        return sorted(item["Key"].removeprefix(f"{prefix}/") for item in listed.get("Contents", []))


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, with one bucket; fails the tests when it does not start."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed after the server stops)
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"moto server exited with {process.returncode}:\n{log.read()[-3000:]}")
        try:
            if requests.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop(process)
            log.seek(0)
            pytest.fail(f"moto server not answering on {endpoint} after 30 s:\n{log.read()[-3000:]}")
        time.sleep(0.2)
    env = {
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "backup-test",
        "AWS_SECRET_ACCESS_KEY": "backup-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    client.create_bucket(Bucket=BUCKET)
    yield S3(endpoint, env, client)
    stop(process)
    log.close()

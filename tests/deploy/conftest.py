"""Fixtures for the deployment tests: a moto S3 server, Redis on loopback, free ports.

Prerequisites that may be absent on a developer machine (Redis, PostgreSQL, nginx) make
the tests that need them skip with the reason shown; with ``CI=true`` they fail instead.
"""
from __future__ import annotations

import os
import uuid

import pytest

from tests.deploy.deploy_support import REDIS_URL, free_port, missing  # noqa: F401


@pytest.fixture(scope="session")
def moto_endpoint():
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        missing(f"moto[server] is not installed: {exc}")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint):
    import boto3
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"mc-test-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    return {"client": client, "bucket": name, "endpoint": moto_endpoint}


@pytest.fixture(scope="session")
def redis_url():
    try:
        import redis
    except ImportError:
        missing("the redis package is not installed (pip install 'marking-centre[redis]')")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        missing(f"Redis at {REDIS_URL} unreachable: {exc}")
    return REDIS_URL



@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    from argon2 import PasswordHasher

    from marking import users
    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))

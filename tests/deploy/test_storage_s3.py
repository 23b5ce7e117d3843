"""The ImageStore contract, run against the local store and the S3 adapter (moto server mode)."""
from __future__ import annotations

import hashlib
import io

import pytest

from marking.config import load_settings
from marking.storage import (ChecksumMismatch, LocalImageStore, ObjectMissing, S3ImageStore, StorageError, open_store,
                             parse_s3_url)

PAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalImageStore(tmp_path / "images")
    b = request.getfixturevalue("s3_bucket")
    return S3ImageStore(b["bucket"], "originals", client=b["client"])


def test_put_get_exists_verify(store):
    sha = store.put(PAGE, label="scan-1 page 1")
    assert sha == hashlib.sha256(PAGE).hexdigest()
    assert store.exists(sha)
    assert store.get(sha) == PAGE
    with store.open(sha) as handle:
        assert handle.read() == PAGE
    assert store.verify(sha)


def test_put_stream_and_idempotent(store):
    first = store.put(io.BytesIO(PAGE))
    second = store.put(PAGE)
    assert first == second
    assert store.get(first) == PAGE


def test_missing_object(store):
    sha = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(sha)
    assert not store.verify(sha)
    with pytest.raises(ObjectMissing):
        store.get(sha)
    with pytest.raises(FileNotFoundError):   # ObjectMissing is a FileNotFoundError too
        store.open(sha)


def test_bad_name_refused(store):
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


def test_verify_detects_altered_object(store):
    sha = store.put(PAGE)
    if isinstance(store, LocalImageStore):
        path = store.path_for(sha)
        path.chmod(0o644)
        path.write_bytes(PAGE + b"tampered")
    else:   # an out-of-band overwrite (what Object Lock forbids in production)
        store.client.put_object(Bucket=store.bucket, Key=store.key_for(sha), Body=PAGE + b"tampered")
    assert not store.verify(sha)


def test_s3_key_checksum_and_metadata(s3_bucket):
    store = S3ImageStore(s3_bucket["bucket"], "/a/b/", client=s3_bucket["client"])
    sha = store.put(PAGE)
    assert store.key_for(sha) == f"a/b/{sha}"
    head = s3_bucket["client"].head_object(Bucket=s3_bucket["bucket"], Key=f"a/b/{sha}", ChecksumMode="ENABLED")
    assert head["Metadata"]["mc-sha256"] == sha
    import base64
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == sha   # the service recorded SHA-256


def test_s3_verify_checks_recorded_checksum(s3_bucket):
    """verify() re-hashes the bytes and also compares the SHA-256 the service recorded at upload.

    (moto records but does not enforce the declared checksum; AWS S3 refuses a mismatching
    body with BadDigest, which put() reports as a StorageError.)
    """
    import base64
    store = S3ImageStore(s3_bucket["bucket"], client=s3_bucket["client"])
    sha = hashlib.sha256(PAGE).hexdigest()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    s3_bucket["client"].put_object(Bucket=s3_bucket["bucket"], Key=store.key_for(sha), Body=PAGE,
                                   ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong)
    with pytest.raises(ChecksumMismatch):
        store.get(sha)
    assert not store.verify(sha)


def test_s3_unreachable_is_storage_error(tmp_path):
    import boto3
    from botocore.config import Config
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1))
    store = S3ImageStore("bucket", client=client)
    with pytest.raises(StorageError):
        store.put(PAGE)


def test_open_store_chooses_by_setting(tmp_path, moto_endpoint):
    local = open_store(load_settings(env={"MC_IMAGE_STORE": str(tmp_path / "img")}))
    assert isinstance(local, LocalImageStore)
    settings = load_settings(env={"MC_IMAGE_STORE": "s3://scans/centre-1", "MC_S3_ENDPOINT_URL": moto_endpoint,
                                  "MC_S3_REGION": "us-east-1"})
    s3 = open_store(settings)
    assert isinstance(s3, S3ImageStore) and s3.bucket == "scans" and s3.prefix == "centre-1/"
    assert open_store(settings) is s3            # one client per location
    s3.client.create_bucket(Bucket="scans")
    assert s3.get(s3.put(PAGE)) == PAGE
    assert parse_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        parse_s3_url("s3:///prefix")


def test_fixity_audit_over_the_store_names_missing_and_altered_images(store, db):
    """R-DATA-1: ``marking.fixity`` against the local store and the S3 adapter alike."""
    from sqlalchemy import select, update

    from marking import fixity, simulate
    from marking.models import Response
    from tests.marking.factories import staffed_subject

    ids = staffed_subject(db, markers=1)
    simulate.create_responses_for_testing(db, ids["subject_code"], 3, seed=1)
    images = [PAGE + bytes([n]) for n in range(3)]
    shas = [store.put(image) for image in images]
    with db.write() as s:
        rows = s.execute(select(Response.id).order_by(Response.id)).scalars().all()[:3]
        for row_id, sha in zip(rows, shas):
            s.execute(update(Response).where(Response.id == row_id).values(image_sha256=sha))
    assert fixity.audit_images(db, store).ok
    if isinstance(store, S3ImageStore):   # behind the app's back, as a failing bucket would
        store.client.delete_object(Bucket=store.bucket, Key=store.key_for(shas[0]))
        store.client.put_object(Bucket=store.bucket, Key=store.key_for(shas[1]), Body=b"bit rot")
    else:
        store.path_for(shas[0]).unlink()
        store.path_for(shas[1]).chmod(0o644)
        store.path_for(shas[1]).write_bytes(b"bit rot")
    report = fixity.audit_images(db, store)
    assert [(m["sha256"], m["table"], m["id"]) for m in report.missing] == [(shas[0], "response", rows[0])]
    assert [a["sha256"] for a in report.altered] == [shas[1]]
    assert report.checked == 3 and not report.ok

"""Storage faults answer 503 with Retry-After, fail fast, are logged once with their cause, and lose nothing.

Real faults: a SQLite write lock held by another connection, a real full filesystem (an 8 MiB tmpfs,
which needs root and mount; the test is skipped, saying so, where that is not allowed), and a disk that fails
(an ext4 loop device shut down with EXT4_IOC_SHUTDOWN: every read and write after it is EIO).
"""
from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import sqlite3
import struct
import subprocess
import uuid

import pytest
from fastapi.testclient import TestClient

from incidentd.api.app import create_app
from incidentd.config import Settings
from incidentd.runtime import Runtime
from tests.incidentd.keyring import bearer


def _alert(fp: str) -> dict:
    starts = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
    return {"version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": "firing", "receiver": "incidentd",
            "alerts": [{"status": "firing", "labels": {"alertname": "ModelAccuracyLow", "model": "digits"},
                        "annotations": {"summary": "accuracy low"}, "startsAt": starts,
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fp}]}


def _faults_logged(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    return sum(1 for r in caplog.records if r.levelno == logging.ERROR and f"storage fault ({kind})" in r.message)


@pytest.fixture()
def service(tmp_path):
    def make(db):
        rt = Runtime(Settings(database=db))
        client = TestClient(create_app(rt.settings, rt, start=False))
        client.__enter__()
        client.headers.update(bearer(rt.store, "alertmanager"))
        made.append((rt, client))
        return rt, client
    made: list = []
    yield make
    for rt, client in made:
        client.__exit__(None, None, None)
        rt.stop()


def test_a_held_lock_answers_503_with_retry_after_and_the_retry_is_stored(service, tmp_path, caplog):
    rt, client = service(tmp_path / "db.sqlite")
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")                     # another writer holds the lock
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        r = client.post("/webhooks/alertmanager", json=_alert("fp-lock"))
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
    assert _faults_logged(caplog, "database locked") == 1, "logged once with the cause, not per request"
    other.execute("ROLLBACK")
    other.close()
    r = client.post("/webhooks/alertmanager", json=_alert("fp-lock"))   # Alertmanager's retry
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert [a.attributes["fingerprint"] for a in rt.store.open_alerts("digits")] == ["fp-lock"]


@pytest.fixture()
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(path) -> None:
    """Write until the filesystem refuses: ENOSPC for real."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 16384)
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)


def test_a_full_disk_answers_503_not_500_and_nothing_accepted_is_lost(service, tiny_fs, caplog):
    rt, client = service(tiny_fs / "db.sqlite")
    accepted = []
    for i in range(3):
        fp = f"fp-before-{i}"
        assert client.post("/webhooks/alertmanager", json=_alert(fp)).status_code == 200
        accepted.append(fp)
    filler = tiny_fs / "filler"
    _fill(filler)
    caplog.set_level(logging.DEBUG)
    refused = []
    for _ in range(20):     # until the write-ahead log needs a page it cannot get
        fp = f"fp-{uuid.uuid4().hex[:8]}"
        r = client.post("/webhooks/alertmanager", json=_alert(fp))
        assert r.status_code in (200, 503), r.text
        (accepted if r.status_code == 200 else refused).append(fp)
        if r.status_code == 503:
            assert r.headers["Retry-After"].isdigit()
    assert refused, "a full disk must refuse writes"
    assert _faults_logged(caplog, "disk full") == 1
    filler.unlink()
    for fp in refused:      # Alertmanager retries what got a 5xx
        assert client.post("/webhooks/alertmanager", json=_alert(fp)).status_code == 200
    stored = {a.attributes["fingerprint"] for a in rt.store.open_alerts("digits")}
    assert stored == set(accepted) | set(refused), "everything answered 200 is stored, and every retry too"


@pytest.fixture()
def failing_disk(tmp_path):
    """A real ext4 filesystem on a loop device; ``fail()`` shuts it down (EXT4_IOC_SHUTDOWN with the log
    flushed): every later read or write of it is an I/O error, as on a disk that died. ``repair()`` mounts it
    again, as an operator would after replacing the disk."""
    img, mnt = tmp_path / "disk.img", tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    with img.open("wb") as f:
        f.truncate(16 * 2**20)
    made = subprocess.run(["mkfs.ext4", "-q", str(img)], capture_output=True, text=True)
    done = made.returncode == 0 and subprocess.run(["mount", "-o", "loop", str(img), str(mnt)],
                                                   capture_output=True, text=True)
    if not done or done.returncode != 0:
        pytest.skip(f"cannot mount an ext4 loop device here: {(made.stderr or done and done.stderr).strip()}")

    class Disk:
        path = mnt

        def fail(self) -> None:
            fd = os.open(mnt, os.O_RDONLY)
            try:
                fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_LOGFLUSH))
            finally:
                os.close(fd)

        def repair(self) -> None:
            subprocess.run(["umount", str(mnt)], check=True)
            subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)

    yield Disk()
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


EXT4_IOC_SHUTDOWN = 0x8004587D     # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_LOGFLUSH = 1


def test_a_disk_io_error_answers_503_and_nothing_accepted_is_lost(service, failing_disk, caplog):
    rt, client = service(failing_disk.path / "db.sqlite")
    assert client.post("/webhooks/alertmanager", json=_alert("fp-before")).status_code == 200
    failing_disk.fail()
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        r = client.post("/webhooks/alertmanager", json=_alert("fp-during"))
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), r.text
    assert _faults_logged(caplog, "I/O error") == 1, "logged once with the cause, not per request"
    assert _faults_logged(caplog, "database error") == 0, "what follows from the dead disk is the same fault"
    auth = client.headers["Authorization"]
    client.__exit__(None, None, None)
    rt.stop()
    failing_disk.repair()                 # the disk replaced; the service started again on it
    rt = Runtime(Settings(database=failing_disk.path / "db.sqlite"))
    try:
        with TestClient(create_app(rt.settings, rt, start=False)) as again:
            r = again.post("/webhooks/alertmanager", json=_alert("fp-during"),      # Alertmanager's retry
                           headers={"Authorization": auth})
            assert r.status_code == 200 and r.json()["accepted"] == 1
        stored = {a.attributes["fingerprint"] for a in rt.store.open_alerts("digits")}
        assert stored == {"fp-before", "fp-during"}, "what was answered 200 survived the disk's death"
    finally:
        rt.stop()

"""Celery's production shape, natively: the lab's Celery scenario on a real Redis broker.

Debian's ``redis-server`` is started by each test on a Unix socket of its own (no port to
collide with, nothing persisted), and ``python -m lab run celery-chromadb`` is pointed at it
through ``LAB_CELERY_BROKER_URL``: the worker and the driver then exchange the task through Redis
instead of the lab's filesystem broker. The verdicts must not change (prefork still deadlocks,
solo still works), and the broker's queue must be empty afterwards. The same runs in Compose are
in tests/test_docker_engine.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LONG_TIMEOUT, REPO, SHORT_TIMEOUT

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the Linux futex deadlock, read from /proc"),
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="redis-server is not installed: apt-get install redis-server "
                              "(.ci/run does)"),
    pytest.mark.skipif(importlib.util.find_spec("celery") is None
                       or importlib.util.find_spec("redis") is None,
                       reason="Celery's Redis transport is not installed: "
                              "pip install 'celery[redis]>=5.4,<6' (.ci/run does)"),
]

READY = b"ready to accept connections"  # redis-server's log line once it serves clients
QUEUE = "celery"  # Celery's default queue: a Redis list
UNACKED = "unacked"  # kombu's hash of messages delivered to a worker and not acknowledged yet


def start_redis(reaper, directory: Path) -> Path:
    """Start redis-server on a Unix socket in ``directory``; return the socket once it serves.

    Readiness is redis-server's own log line on its stdout, read with a deadline.
    """
    socket = directory / "redis.sock"
    server = reaper.popen(["redis-server", "--port", "0", "--unixsocket", str(socket),
                           "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                           "--dir", str(directory)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    deadline = time.monotonic() + SHORT_TIMEOUT
    while READY not in seen.lower():
        left = deadline - time.monotonic()
        if left <= 0 or server.poll() is not None:
            pytest.fail(f"redis-server did not become ready:\n{seen.decode(errors='replace')}")
        if select.select([server.stdout], [], [], left)[0]:
            seen += os.read(server.stdout.fileno(), 4096)
    return socket


@pytest.mark.slow
@pytest.mark.parametrize("pool, verdict", [("prefork", "deadlock"), ("solo", "ok")],
                         ids=["pool=prefork", "pool=solo"])
def test_celery_on_a_real_redis_broker_keeps_its_verdicts(reaper, tmp_path, measure, pool,
                                                          verdict):
    import redis

    # GIVEN Debian's redis-server, and the lab's Celery app pointed at it
    socket = start_redis(reaper, tmp_path)
    url = f"redis+socket://{socket}"
    # WHEN one Celery worker runs the ChromaDB query task under the pool
    started = time.monotonic()
    result = reaper.run([sys.executable, "-m", "lab", "run", "celery-chromadb", "--pool", pool,
                         "--out", str(tmp_path / "out")], cwd=REPO, timeout=LONG_TIMEOUT,
                        env={**os.environ, "LAB_CELERY_BROKER_URL": url})
    measure(f"celery-chromadb --pool {pool} on redis-server (native)", time.monotonic() - started)
    # THEN the verdict is the one the filesystem broker gives (exit 0: as expected)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [run_dir] = (tmp_path / "out").iterdir()
    evidence = json.loads((run_dir / "evidence.json").read_text())
    assert evidence["expected"] == evidence["verdict"] == verdict
    # and the task went through Redis: the worker connected to it
    assert f"Connected to {url}" in (run_dir / "celery-worker.log").read_text()
    # and nothing is left in the broker: the queue is empty, no delivery is unacknowledged
    client = redis.Redis(unix_socket_path=str(socket))
    try:
        assert client.llen(QUEUE) == 0
        assert client.hlen(UNACKED) == 0
    finally:
        client.close()


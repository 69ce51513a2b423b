"""The embedded broker's messages reach the worker whole (lab.celery_lab.transport).

kombu's filesystem transport creates a message under its final name before it writes the
bytes; a worker that lists the folder in between reads an empty message and dies with
"Unrecoverable error: JSONDecodeError" (seen under a CPU hog: the solo pool's worker exited
with 1). The lab's transport writes under a name the reader skips and renames it into place.
"""

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("kombu") is None,
                                reason="kombu is not installed: pip install -e '.[celery]'")

QUEUE = "celery"


def channel(transport, folder):
    from kombu import Connection

    queue = folder / "queue"
    queue.mkdir(exist_ok=True)
    options = {"data_folder_in": str(queue), "data_folder_out": str(queue),
               "processed_folder": str(folder / "processed"), "store_processed": False}
    (folder / "processed").mkdir(exist_ok=True)
    connection = Connection("filesystem://", transport=transport, transport_options=options)
    return connection, connection.channel()


def test_kombus_own_transport_reads_a_message_caught_between_create_and_write(tmp_path):
    # GIVEN kombu's writer caught after open(final name, "wb") and before its write
    from kombu.transport.filesystem import Transport

    connection, chan = channel(Transport, tmp_path)
    try:
        (tmp_path / "queue" / f"1_x.{QUEUE}.msg").write_bytes(b"")
        # WHEN the worker polls THEN it takes the empty message and cannot decode it
        with pytest.raises(json.JSONDecodeError):
            chan._get(QUEUE)
    finally:
        connection.release()


def test_labs_transport_never_shows_a_message_before_it_is_whole(tmp_path):
    from queue import Empty

    from lab.celery_lab.transport import PARTIAL_SUFFIX, Transport

    connection, chan = channel(Transport, tmp_path)
    try:
        # GIVEN the lab's writer caught mid-write: its bytes are under the partial name
        partial = tmp_path / "queue" / f"1_x.{QUEUE}.msg{PARTIAL_SUFFIX}"
        partial.write_bytes(b'{"body": ')
        # WHEN the worker polls THEN there is nothing yet, and the partial file stays
        with pytest.raises(Empty):
            chan._get(QUEUE)
        assert partial.exists()
        partial.unlink()
        # AND a message it put arrives whole, and nothing of it is left behind
        chan._put(QUEUE, {"body": "query", "n": 1})
        assert chan._get(QUEUE) == {"body": "query", "n": 1}
        assert list((tmp_path / "queue").iterdir()) == []
    finally:
        connection.release()


def test_the_embedded_app_uses_it_and_a_real_broker_url_does_not(tmp_path, monkeypatch):
    from lab.celery_lab import ENV_BROKER_URL, ENV_DIR

    monkeypatch.delenv(ENV_BROKER_URL, raising=False)
    monkeypatch.setenv(ENV_DIR, str(tmp_path))  # the worker's module makes its app at import
    from lab.celery_lab.app import EMBEDDED_TRANSPORT, make_app

    assert make_app(tmp_path).conf.broker_transport == EMBEDDED_TRANSPORT
    monkeypatch.setenv(ENV_BROKER_URL, "redis://localhost:6379/0")
    assert make_app(tmp_path).conf.broker_transport is None

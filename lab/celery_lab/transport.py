"""kombu's filesystem transport with a message that appears in the queue folder whole.

kombu 5.x writes a message straight into the queue folder under its final ``*.msg`` name and
only then writes its bytes (under an advisory lock the reader never takes). The reader moves
the file away as soon as it lists it, so a worker polling fast on a loaded machine can read an
empty message and die with ``JSONDecodeError`` ("Unrecoverable error"; reported upstream as
celery/kombu#1551). Here the message is
written under a name the reader skips and renamed into place, which is atomic on one filesystem.
"""

from __future__ import annotations

import os
import time
import uuid

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL_SUFFIX = ".partial"  # ``_get`` takes only names ending in ``.<queue>.msg``


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel

"""Fork after ChromaDB started its Rust threads; the child's query deadlocks in futex.

Usage: python chromadb_fork_child.py DATA_DIR. Prints "child PID" once the child exists, then
waits for it; the test kills the child, and the parent then exits.
"""

import hashlib
import os
import sys

os.environ["ANONYMIZED_TELEMETRY"] = "False"

import chromadb  # noqa: E402
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings  # noqa: E402


class HashEmbedding(EmbeddingFunction[Documents]):
    """Deterministic 16-float embedding from SHA-256: no model, no download."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:
        return [[b / 255.0 for b in hashlib.sha256(d.encode()).digest()[:16]] for d in input]

    @staticmethod
    def name() -> str:
        return "lab-hash"


def main(data_dir: str) -> int:
    client = chromadb.PersistentClient(path=data_dir)
    docs = client.get_or_create_collection("docs", embedding_function=HashEmbedding())
    docs.add(ids=["a", "b", "c"], documents=["alpha", "beta", "gamma"])
    docs.query(query_texts=["alpha"], n_results=1)  # starts the runtime's worker threads
    pid = os.fork()
    if pid == 0:
        # The child has only this thread: the query waits for a runtime worker that never runs.
        docs.query(query_texts=["beta"], n_results=1)
        os._exit(0)
    print(f"child {pid}", flush=True)
    _, status = os.waitpid(pid, 0)
    return 0 if os.waitstatus_to_exitcode(status) == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

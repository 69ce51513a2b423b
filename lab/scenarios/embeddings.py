"""Deterministic local embeddings: a hash of the text, no model, no download, no network."""

from __future__ import annotations

import hashlib

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings

DIMENSIONS = 16


class HashEmbedding(EmbeddingFunction[Documents]):
    """Embed a text as the first 16 bytes of its SHA-256, scaled to [0, 1]."""

    def __init__(self) -> None:
        pass

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 (chromadb's name)
        return [[b / 255.0 for b in hashlib.sha256(text.encode()).digest()[:DIMENSIONS]]
                for text in input]

    @staticmethod
    def name() -> str:
        return "lab-sha256-16"

    def get_config(self) -> dict:
        return {}

    @staticmethod
    def build_from_config(config: dict) -> HashEmbedding:
        return HashEmbedding()

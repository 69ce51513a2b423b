"""Reproduction and forensics lab for fork/thread crashes."""

__version__ = "0.1.0"

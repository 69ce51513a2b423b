"""The portable process backend (psutil): what the lab runs on macOS and Windows, and on Linux
with ``LAB_BACKEND=portable`` so that the same code is exercised here."""

# The lab's Linux environment for hosts that are not Linux (`make demo-gdb` on macOS/Windows, or
# `DOCKER=1 make ...`). Linux users do not need it: every target runs natively there.
#
# Base: Debian bookworm with Debian's own python3.11, NOT python:3.11-slim-bookworm. `py-bt`
# needs CPython's gdb extension (Tools/gdb/libpython.py, installed as python3.X-gdb.py) for the
# exact interpreter build, and that build's debug information (libpython.py reads PyObject
# layouts and _PyEval_EvalFrameDefault's locals through DWARF). The official python image
# compiles CPython into /usr/local and ships neither, and CPython's source tarball is not on a
# package registry a build can rely on. Debian's python3.11-dbg ships both for /usr/bin/python3.11:
# /usr/share/gdb/auto-load/usr/bin/python3.11-gdb.py and /usr/lib/debug/.build-id/*.debug, at
# exactly the interpreter's version (it depends on `python3.11 (= same version)`). The lab's
# finder (lab/debuggers/pyext.py) resolves the venv's python to /usr/bin/python3.11 and finds
# the auto-load file; a build step below proves it, so an image without py-bt never builds.
#
# No `# syntax=` line: BuildKit would fetch that frontend image from Docker Hub first, and a
# build that reaches only Debian's archive and PyPI (an offline mirror of the base) would fail.
# Nothing here needs more than the builder's own Dockerfile syntax.
#
# Pinning: the base image by tag. Its digest could not be fetched where this file was written
# (no registry access): pin `debian:bookworm-slim@sha256:...` in your mirror for byte-for-byte
# builds. Debian package versions are not pinned (DL3008 is off in .hadolint.yaml): the archive
# keeps only the current point release, so an exact pin breaks a clean build at the next
# security update; python3.11 and python3.11-dbg stay in lockstep through Debian's dependency.
# Python packages are pinned by the ranges in pyproject.toml.
#
# User: root inside the container, on purpose. gdb/lldb attach to a grandchild of the process
# that started them (the lab starts the debugger; the scenario's host forks the child), which
# Yama (kernel.yama.ptrace_scope=1, the default of most kernels and of Docker Desktop's VM)
# refuses unless the tracer holds CAP_SYS_PTRACE. compose.yml adds that capability to the
# debugging services, and Docker grants added capabilities to uid 0 only: a non-root user would
# need ptrace_scope=0 on the host kernel, a host-wide change. The container stays unprivileged
# (Docker's default capability set + SYS_PTRACE, default seccomp and AppArmor profiles,
# no-new-privileges): see compose.yml. What root writes into the host's bind-mounted directories
# is given to the host user when the command ends (docker/entrypoint.py).
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LAB_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# python3.11-dbg: py-bt (see above). gdb, lldb, strace: the debuggers. procps: ps/pgrep for
# people in `make shell`. gcc, libc6-dev: the lab's small C helper (lab/native) is built on first
# use. make: the same targets inside the container (`make test` is the test service).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      gcc \
      gdb \
      libc6-dev \
      lldb \
      make \
      procps \
      python3.11 \
      python3.11-dbg \
      python3.11-venv \
      strace \
 && rm -rf /var/lib/apt/lists/*

# Debian's lldb-14 reports a Python path that does not exist (`lldb -P` prints
# /usr/lib/local/lib/python3.11/dist-packages), so its scripting fails with "No module named
# 'lldb.embedded_interpreter'" (llvm/llvm-project#55575). Point that path at the real package.
RUN lldb_path="$(lldb -P 2>/dev/null | tail -n 1)" \
 && if [ ! -e "$lldb_path/lldb/embedded_interpreter.py" ]; then \
      mkdir -p "$(dirname "$lldb_path")" \
      && ln -s /usr/lib/llvm-14/lib/python3.11/dist-packages "$lldb_path"; \
    fi \
 && test -e "$lldb_path/lldb/embedded_interpreter.py"

WORKDIR /lab

# Dependencies first (a layer that survives edits of the lab's code and of the README): an
# editable install of the project against a placeholder package and an empty README (the real
# ones replace them below), exactly as the Makefile installs it natively, and the Redis client,
# which Celery needs for compose.yml's `redis` broker (celery[redis]).
COPY pyproject.toml ./
RUN mkdir -p lab \
 && touch lab/__init__.py README.md \
 && python3.11 -m venv "$LAB_VENV" \
 && "$LAB_VENV/bin/python" -m pip install --no-cache-dir -e '.[test,lint,celery,demo,plots,cores]' \
      'celery[redis]>=5.4,<6'

# Runs the command, then gives what it wrote into the bind mounts to the host user.
COPY docker/entrypoint.py /usr/local/bin/lab-entrypoint
COPY . .

# The stamp tells the Makefile the venv is installed (make runs natively inside the container).
# Then prove what the demos rely on: the extension that gives py-bt is found for this interpreter.
RUN mkdir -p crash_dumps results \
 && touch "$LAB_VENV/.installed" \
 && python -c 'import os, sys; from lab.debuggers.pyext import find_python_gdb_extension as f; p = f(os.getpid()); print("py-bt extension:", p); sys.exit(p is None)'

ENTRYPOINT ["python", "/usr/local/bin/lab-entrypoint"]
CMD ["python", "-m", "lab", "list"]

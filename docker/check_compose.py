"""Check compose.yml against the lab's least-privilege policy, without a Docker engine.

The compose-spec schema check (check-jsonschema's vendored compose-spec) says the file is valid
Compose; this says it is the lab's: every service exists, none is privileged or unconfined, every
one sets no-new-privileges, the debugging services add exactly SYS_PTRACE, the lab's containers
get no network, and evidence directories are bind-mounted.

Usage: python docker/check_compose.py [compose.yml]    (exit 0: fine; 1: one line per problem)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

# The services the Makefile runs, and which of them attach a debugger (gdb, lldb, strace).
SERVICES = ("demo-gdb", "demo-lldb", "demo-crash", "demo-strace", "demo-fixed", "matrix", "test",
            "shell", "redis", "celery-redis")
PTRACE_SERVICES = ("demo-gdb", "demo-lldb", "demo-strace", "matrix", "test", "shell",
                   "celery-redis")
ALLOWED_CAPS = {"SYS_PTRACE"}
# {container path: the host path}; the evidence directory may be moved with LAB_HOST_CRASH_DUMPS
# (the Makefile's CRASH_DUMPS), with ./crash_dumps as its default.
BIND_MOUNTS = {"/lab/crash_dumps": ("./crash_dumps", "${LAB_HOST_CRASH_DUMPS:-./crash_dumps}"),
               "/lab/results": ("./results",)}
NO_NEW_PRIVILEGES = "no-new-privileges:true"
# A lab container has no network of its own: none, or the broker's namespace (service:redis).
LAB_NETWORK = re.compile(r"none|service:[\w.-]+")
# A volume in the short syntax: SOURCE:TARGET[:MODE], where SOURCE may be ${VAR:-default}.
_SHORT_VOLUME = re.compile(r"(\$\{[^}]*\}|[^:]+):([^:]+)(?::[^:]*)?")


def _runs_the_lab(service: dict) -> bool:
    """True for a service built from this repository's Dockerfile (build context `.`)."""
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    return str(context).rstrip("/") in (".", "./")


def _binds(service: dict) -> dict[str, str]:
    """Return {container path: host path} of the service's bind mounts (short or long syntax)."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            match = _SHORT_VOLUME.fullmatch(volume)
            if match and match.group(1).startswith((".", "/", "~", "$")):
                found[match.group(2)] = match.group(1)
        elif isinstance(volume, dict) and volume.get("type") == "bind":
            found[volume.get("target")] = volume.get("source")
    return found


def problems(doc: dict) -> list[str]:
    """Return one line per policy violation in a loaded compose document (empty: compliant)."""
    services = doc.get("services") or {}
    found = [f"missing service {name!r}" for name in SERVICES if name not in services]
    for name, service in services.items():
        service = service or {}
        if service.get("privileged"):
            found.append(f"{name}: privileged is forbidden (add the one capability it needs)")
        options = [str(option) for option in service.get("security_opt") or []]
        for option in options:
            if "unconfined" in option:
                found.append(f"{name}: security_opt {option!r}: ptrace needs no unconfined profile")
        if NO_NEW_PRIVILEGES not in options:
            found.append(f"{name}: security_opt needs {NO_NEW_PRIVILEGES}")
        for key in ("pid", "network_mode", "ipc", "userns_mode"):
            if service.get(key) == "host":
                found.append(f"{name}: {key}: host shares the host's namespace")
        caps = {str(cap).upper().removeprefix("CAP_") for cap in service.get("cap_add") or []}
        if caps - ALLOWED_CAPS:
            found.append(f"{name}: cap_add {sorted(caps - ALLOWED_CAPS)} beyond SYS_PTRACE")
        if name in PTRACE_SERVICES and "SYS_PTRACE" not in caps:
            found.append(f"{name}: a debugging service needs cap_add: [SYS_PTRACE]")
        if name not in PTRACE_SERVICES and "SYS_PTRACE" in caps:
            found.append(f"{name}: SYS_PTRACE on a service that attaches no debugger")
        if _runs_the_lab(service):
            network = str(service.get("network_mode"))
            if not LAB_NETWORK.fullmatch(network) and network != "host":
                found.append(f"{name}: network_mode {network!r}: the lab needs no network "
                             "(none, or service:redis for the broker's client)")
            binds = _binds(service)
            for target, sources in BIND_MOUNTS.items():
                if binds.get(target, "").rstrip("/") not in sources:
                    found.append(f"{name}: bind-mount {sources[0]} at {target} (evidence must "
                                 "survive)")
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "compose.yml")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return 1
    lines = problems(doc if isinstance(doc, dict) else {})
    for line in lines:
        print(f"{path}: {line}", file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())

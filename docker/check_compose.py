"""Check compose.yml against the lab's least-privilege policy, without a Docker engine.

The compose-spec schema check (check-jsonschema's vendored compose-spec) says the file is valid
Compose; this says it is the lab's: every service exists, none is privileged or unconfined, the
debugging services add exactly SYS_PTRACE, and evidence directories are bind-mounted.

Usage: python docker/check_compose.py [compose.yml]    (exit 0: fine; 1: one line per problem)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

# The services the Makefile runs, and which of them attach a debugger (gdb, lldb, strace).
SERVICES = ("demo-gdb", "demo-lldb", "demo-crash", "demo-strace", "demo-fixed", "matrix", "test",
            "shell", "redis")
PTRACE_SERVICES = ("demo-gdb", "demo-lldb", "demo-strace", "matrix", "test", "shell")
ALLOWED_CAPS = {"SYS_PTRACE"}
BIND_MOUNTS = {"/lab/crash_dumps": "./crash_dumps", "/lab/results": "./results"}
LAB_IMAGE_SOURCE = "build"  # a service built from this repository runs the lab


def _binds(service: dict) -> dict[str, str]:
    """Return {container path: host path} of the service's bind mounts (short or long syntax)."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and parts[0].startswith((".", "/", "~")):
                found[parts[1]] = parts[0]
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
        for option in service.get("security_opt") or []:
            if "unconfined" in str(option):
                found.append(f"{name}: security_opt {option!r}: ptrace needs no unconfined profile")
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
        if LAB_IMAGE_SOURCE in service:
            binds = _binds(service)
            for target, source in BIND_MOUNTS.items():
                if binds.get(target, "").rstrip("/") != source:
                    found.append(f"{name}: bind-mount {source} at {target} (evidence must survive)")
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

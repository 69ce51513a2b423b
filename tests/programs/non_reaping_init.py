"""An init that never reaps orphans (a container's PID 1 without --init): it becomes a child
subreaper, runs argv[1:] and waits only for that. Linux only (prctl)."""

import ctypes
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36

if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit("cannot become a child subreaper")
sys.exit(subprocess.run(sys.argv[1:]).returncode)

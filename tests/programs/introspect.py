"""OK: prints what a Python program can see of its own process, as JSON, after one fork.

Run bare and under `lab watch`: the lab's startup hook must leave all of it as it was (threads,
signal handlers, what a fork returns); only sys.path, the environment and faulthandler differ.
"""

import json
import os
import signal
import sys
import threading

pid = os.fork()
if pid == 0:
    os._exit(7)
_, status = os.waitpid(pid, 0)
seen = {
    "threads": threading.active_count(),
    "os_threads": len(os.listdir("/proc/self/task")),
    "handlers": {s.name: str(signal.getsignal(s)) for s in signal.valid_signals()
                 if isinstance(s, signal.Signals) and s.name.startswith("SIG")},
    "child_exit": os.waitstatus_to_exitcode(status),
    "main": sys.modules["__main__"].__file__,
}
print("INTROSPECT " + json.dumps(seen, sort_keys=True), flush=True)

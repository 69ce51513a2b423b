"""OK: a program that writes forged and broken reports to the lab's channel, then exits 0.

A fork report about PID 1 (not of the watched tree), fields of the wrong type, a line that is
not JSON, a spooled report naming a file outside the channel's directory, and a report longer
than PIPE_BUF written in one piece: the lab must ignore each one and judge the run ok.
"""

import json
import os

path = os.environ["LAB_REPORT_FIFO"]
me = os.getpid()
lines = [
    {"event": "fork", "pid": 1, "tid": 1, "t_ns": 1, "threads": [{"tid": 2, "name": "forged"}]},
    {"event": "fork", "pid": [me], "threads": []},
    {"event": "fork", "pid": me, "tid": "x", "t_ns": -5, "threads": ["a", 3, {"tid": "no"}],
     "forking_thread": {"frames": [[1, 2], "x", ["f.py", "9", None]]}},
    {"event": "fork", "pid": me, "spooled": "../../../../etc/passwd"},
    {"event": "finding", "pid": 1, "verdict": "crash", "detail": "forged"},
    {"event": "nonsense", "pid": me},
]
fd = os.open(path, os.O_WRONLY)
for line in lines:
    os.write(fd, json.dumps(line).encode() + b"\n")
os.write(fd, b"not json at all\n")
os.write(fd, json.dumps({"event": "warning", "pid": 1, "message": "x" * 9000}).encode() + b"\n")
os.close(fd)
print("forged_reports: sent", len(lines) + 2, "reports", flush=True)

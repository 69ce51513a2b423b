"""A quiet child no debugger can attach to (its parent is its tracer: PTRACE_TRACEME), then a
clean exit of both once someone writes a byte into the FIFO named by argv[1].

Linux only (ptrace via libc). Under ``lab watch --debugger lldb`` on the portable backend, the
lab's look at the quiet child fails; the run must still end ``ok``, not as the look's error.
"""

import ctypes
import os
import sys

PTRACE_TRACEME = 0

gate = sys.argv[1]
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(write_end)
    if ctypes.CDLL(None, use_errno=True).ptrace(PTRACE_TRACEME, 0, None, None) != 0:
        os._exit(3)
    os.read(read_end, 1)  # quiet until the parent is let go
    os._exit(0)
os.close(read_end)
with open(gate, "rb") as fifo:  # blocks in open(2) until the test opens it for writing
    fifo.read(1)
os.write(write_end, b"x")
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))

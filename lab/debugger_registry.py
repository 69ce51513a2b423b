"""The debuggers the lab drives, and each one's driver modules: the one registry.

A new debugger is a driver (``lab/debuggers/NAME.py``) and an entry here; every command's
``--debugger`` choices, ``lab parse``'s kinds and ``--debugger auto``'s order follow from it.
Module paths as text, nothing imported: it stays on the bottom floor, so that the parsers,
which sit below the drivers, can name the debuggers too.
"""

# name -> {job: driver module}, in the order ``--debugger auto`` tries them. ``capture``
# records a process at the moment it attaches and detaches; ``catch`` attaches, lets the
# process run and records the stop that follows (lab.catch).
DRIVERS = {
    "gdb": {"capture": "lab.debuggers.gdb", "catch": "lab.debuggers.gdb_batch"},  # GDB/MI
    "lldb": {"capture": "lab.debuggers.lldb", "catch": "lab.debuggers.lldb"},
}
DEBUGGERS = tuple(DRIVERS)
JOBS = ("capture", "catch")

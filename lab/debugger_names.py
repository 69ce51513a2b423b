"""The debuggers the lab drives, in the order ``--debugger auto`` tries them.

``lab.debuggers`` maps each name to its driver modules; a new debugger is added here and there.
Kept on the bottom floor so that the parsers, which sit below the drivers, can name them too.
"""

DEBUGGERS = ("gdb", "lldb")

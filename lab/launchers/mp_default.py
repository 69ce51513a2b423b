"""``multiprocessing.Process`` with no start method chosen: what a user who never picks one gets.

That is fork on Linux before CPython 3.14, forkserver from 3.14, spawn on macOS and Windows;
the host reports the method it turned out to be (``Event.LAUNCH``), and the evidence keeps it.
"""

import multiprocessing

from lab.launchers.mp_process import ProcessLauncher

# The first of the supported methods is the default (the multiprocessing docs); asking
# get_start_method() instead would fix it for the rest of the process.
method = multiprocessing.get_all_start_methods()[0]
PICKLES_ARGS = method != "fork"  # fork inherits the arguments in copied memory


class Popen(ProcessLauncher):
    method = None  # the default context, as `multiprocessing.Process(...)` uses

"""multiprocessing's forkserver: children fork from a clean single-threaded server process."""

from lab.launchers.mp_process import ProcessLauncher

method = "forkserver"
PICKLES_ARGS = True  # the target's arguments travel by pickle


class Popen(ProcessLauncher):
    method = "forkserver"

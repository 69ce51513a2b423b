"""multiprocessing's fork start method: the child is a copy of the parent, threads excepted."""

from lab.launchers.mp_process import ProcessLauncher

method = "fork"
PICKLES_ARGS = False  # the target's arguments travel by pickle


class Popen(ProcessLauncher):
    method = "fork"

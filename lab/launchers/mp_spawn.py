"""multiprocessing's spawn: a fresh interpreter runs the target; nothing is inherited."""

from lab.launchers.mp_process import ProcessLauncher

method = "spawn"
PICKLES_ARGS = True  # the target's arguments travel by pickle


class Popen(ProcessLauncher):
    method = "spawn"

"""``ProcessPoolExecutor`` with the spawn start method: the job and its result travel by pickle."""

from lab.launchers.pool import PoolLauncher

method = "spawn"
PICKLES_ARGS = True


class Popen(PoolLauncher):
    method = "spawn"

"""``ProcessPoolExecutor`` with the fork start method: the job and its result travel by pickle."""

from lab.launchers.pool import PoolLauncher

method = "fork"
PICKLES_ARGS = True


class Popen(PoolLauncher):
    method = "fork"

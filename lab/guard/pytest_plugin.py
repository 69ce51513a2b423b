"""``pytest --fork-guard``: a fork in a test that would deadlock its child fails the test.

Registered through the ``pytest11`` entry point when fork-crash-lab is installed; off unless
asked. ``--fork-guard`` (or ``--fork-guard=strict``): the forking call raises ForkSafetyError
in the test, whose message names the thread, the line of the lock it holds (or the library
and its threads) and the fix. ``--fork-guard=warn``: the forks happen, and each risky one is
listed in the terminal summary; the exit status is unchanged.
"""

from __future__ import annotations

import pytest

_KEY = "fork_guard"


def pytest_addoption(parser):
    group = parser.getgroup("fork-guard", "fork-crash-lab's fork guard")
    group.addoption("--fork-guard", nargs="?", const="strict", default=None,
                    choices=("strict", "warn"), metavar="MODE", dest=_KEY,
                    help="stop (strict, the default) or list (warn) every fork made while "
                    "another thread holds a lock or a native library's threads are live")


def pytest_configure(config):
    mode = config.getoption(_KEY)
    if mode:
        from lab import guard

        config.stash[_stash()] = guard.install(mode)


def _stash():
    global _STASH
    if _STASH is None:
        _STASH = pytest.StashKey()
    return _STASH


_STASH = None


def _guard(config):
    return config.stash.get(_stash(), None) if _STASH is not None else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    guard = _guard(item.config)
    if guard is not None:
        guard.where = item.nodeid
    try:
        yield
    finally:
        if guard is not None:
            guard.where = None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    guard = _guard(config)
    if guard is None or not guard.forks:
        return
    terminalreporter.section("fork guard")
    for fork in guard.forks:
        for line in fork.text().splitlines():
            terminalreporter.write_line(line)
    stopped = sum(fork.stopped for fork in guard.forks)
    terminalreporter.write_line(f"{len(guard.forks)} risky fork(s), {stopped} stopped "
                                f"({guard.mode} mode)")


def pytest_unconfigure(config):
    guard = _guard(config)
    if guard is not None:
        from lab import guard as module

        module.uninstall()

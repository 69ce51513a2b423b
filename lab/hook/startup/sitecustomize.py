"""The lab's startup hook (on PYTHONPATH in a watched tree): install the fork hook, then chain."""

# Python 2 must be able to parse this file, and any Python must get on as before if anything
# here fails: the hook itself lives in _lab_fork_hook (Python >= 3.7) and never raises.
import os
import sys

# The lab puts this directory on PYTHONPATH as an absolute, resolved path: comparing plain
# absolute paths finds it without a system call per sys.path entry.
_HERE = os.path.dirname(os.path.abspath(__file__))


def _install():
    if sys.version_info < (3, 7) or os.environ.get("LAB_NO_FORK_HOOK") == "1":
        return
    try:
        import _lab_fork_hook

        _lab_fork_hook.install()
    except Exception:
        pass  # the program runs as it would without the lab


def _chain():
    """Run the next ``sitecustomize`` on sys.path (the program's own, the distribution's), as
    site.py would have without this one; its errors propagate, so site reports them as ever."""
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
    try:
        from importlib.machinery import PathFinder
    except ImportError:  # Python 2
        import imp

        try:
            found = imp.find_module("sitecustomize", rest)
        except ImportError:
            return
        del sys.modules["sitecustomize"]
        imp.load_module("sitecustomize", *found)
        return
    spec = PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    # What importlib.util.module_from_spec does, without importing it (and contextlib) here.
    module = type(sys)("sitecustomize")
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, spec.origin
    module.__cached__, module.__package__ = spec.cached, ""
    sys.modules["sitecustomize"] = module  # `import sitecustomize` finds theirs, as before
    spec.loader.exec_module(module)


_install()
_chain()

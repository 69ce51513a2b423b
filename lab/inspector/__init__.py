"""``lab inspect PID``: diagnose a process that is already hung, without relaunching it.

``run`` is the observer (``inspect``), ``sample`` the /proc window and its verdicts, ``story``
the parent's threads and the fork story; summary.md is ``lab.render_inspect``'s."""

"""A program's own sitecustomize: the lab's startup hook must run it as before."""

import os

MARKER = "own sitecustomize ran"
os.environ["OWN_SITECUSTOMIZE"] = "1"

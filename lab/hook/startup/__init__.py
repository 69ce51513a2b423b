"""The directory the lab puts on a watched program's PYTHONPATH (a package only to be installed)."""

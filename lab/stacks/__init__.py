"""Python stacks without the interpreter's debug package: py-spy (live), pystack (a core)."""

"""Pure parsers: recorded debugger output in, evidence dataclasses out."""

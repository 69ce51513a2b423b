"""Linux specifics: /proc, syscall decoding, the netlink process connector, prctl."""

"""Is the peer of a socket alive? An answer's data, its rules, live and idle-limit readings."""

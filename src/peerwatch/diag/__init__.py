"""Host-wide diagnostics behind ``peerwatch inspect``.

``netlink`` dumps every TCP socket of this network namespace through netlink
sock_diag (the interface ``ss`` uses, never its text), ``sockdiag`` turns the
messages into records, ``owners`` maps socket inodes to the processes holding
them, ``view`` filters, renders and prints the rows with their ``assess``
verdicts. Everything but the table (rich, from the ``inspect`` extra) is the
standard library.
"""

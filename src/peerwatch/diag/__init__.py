"""Host-wide diagnostics behind ``peerwatch inspect``.

``sockdiag`` reads every TCP socket of this network namespace through netlink
sock_diag (the interface ``ss`` uses, never its text), ``owners`` maps socket
inodes to the processes holding them, ``view`` filters, renders and prints
the rows with their ``assess`` verdicts. Only the CLI imports this package:
it needs the ``inspect`` extra (pyroute2, rich).
"""

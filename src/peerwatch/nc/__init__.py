"""``peerwatch nc``: the traced netcat of "TCP puzzlers" (``dnc``), for watching TCP fail.

It moves bytes like nc (stdin to the socket, the socket to stdout) and prints,
on stderr, every step with a timestamp: connect or accept, each poll() result
with its flags, each read and write with its result and what that result
means, and each change the kernel reports in TCP_INFO (state, retransmissions,
probes). ``--keep-half-open`` keeps the socket after the peer's FIN, as dnc did
to show a half-open connection end in RST. The module uses the standard
library only.
"""

from peerwatch.nc.session import NcOptions, run_nc

__all__ = ["NcOptions", "run_nc"]

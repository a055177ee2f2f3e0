"""What peerwatch asks of the Linux kernel: TCP_INFO, socket options, other processes' sockets."""

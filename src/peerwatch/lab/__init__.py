"""The lab: real kernel TCP stacks in network namespaces, faults injected, detection measured.

Modules: ``netns`` (namespaces, teardown, privileges), ``hosts`` (kang, kodos
and the switch), ``settings`` (heartbeat settings and kernel timers),
``strategies`` and ``scenarios`` (what is measured, under which fault),
``agent``/``server``/``rawclient``/``asyncclients`` (the programs inside the
hosts), ``states`` (TCP states via sock_diag), ``runner``, ``expectations``,
``observations`` and ``report``. Entry point: ``peerwatch lab``.
"""

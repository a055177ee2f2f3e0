"""The lab: real kernel TCP stacks in network namespaces, faults injected, detection measured.

Modules: ``netns`` (namespaces, teardown, privileges), ``hosts`` (kang, kodos
and the switch), ``settings`` (heartbeat settings and kernel timers),
``strategies`` and ``scenarios`` (what is measured, under which fault),
``agents`` (the programs inside the hosts), ``control`` (the lab's side of
them), ``states`` (TCP states via sock_diag), ``runner``, ``expectations``,
``observations`` and ``report``; ``drivers`` (the driver scenarios). Entry
point: ``peerwatch lab``.
"""

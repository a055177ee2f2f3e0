"""One small module per driver: protect its connections through the driver's public hooks.

Each module imports its driver only when used, says in its docstring which
hook it uses and where the driver has none, and derives every value from the
one budget of ``peerwatch.guard`` (``peerwatch.kernel.knobs.knobs_for``).
"""

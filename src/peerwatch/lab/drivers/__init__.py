"""The lab's driver scenarios: real servers, real drivers, the faults users meet in production.

PostgreSQL, Redis, nginx, RabbitMQ and NATS (Debian packages) run in the
server namespace; psycopg 3, redis-py, requests, pika and nats.py run in the
client namespace, each under several protections (the driver as shipped, the
driver's own options, ``peerwatch.guard`` on its socket, ``peerwatch run``).
Each fault is injected once for all of them at the same time, and the report
says how long each application waited for a clear error, or that it was still
waiting at the bound ("never").
"""

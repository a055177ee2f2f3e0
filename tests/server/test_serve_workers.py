"""``peerwatch serve --workers N``: real processes on loopback, SO_REUSEPORT, signals, restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
from serveproc import Proc, established_by_pid, pid_gone, time_wait_on

import peerwatch

pytestmark = pytest.mark.timeout(60)


async def _connect_many(port: int, count: int) -> list[peerwatch.Connection]:
    return [
        await peerwatch.connect("127.0.0.1", port, interval=0.5, timeout=3.0) for _ in range(count)
    ]


def _listening_pids(port: int, pids: list[int]) -> set[int]:
    import psutil

    return {
        pid
        for pid in pids
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }


async def test_two_workers_each_listen_with_reuseport_and_share_the_connections(serve):
    served = serve("--workers", "2", "--handler", "echo")
    assert len(served.pids) == 2
    assert _listening_pids(served.port, served.pids) == set(served.pids)
    conns = await _connect_many(served.port, 24)
    try:
        for i, conn in enumerate(conns):
            await conn.send(b"ping %d" % i)
            assert await asyncio.wait_for(conn.recv(), 5) == b"ping %d" % i
        # one incarnation for the run: landing on another worker is not a restart
        assert not any(conn.peer_restarted for conn in conns)
        assert len({conn.peer_incarnation for conn in conns}) == 1
        per_worker = [established_by_pid(pid, served.port) for pid in served.pids]
        assert sum(per_worker) == 24
        # the kernel hashes each 4-tuple to one listener: all 24 on one worker has p = 2^-23
        assert min(per_worker) > 0, per_worker
    finally:
        for conn in conns:
            await conn.close()


async def test_sigterm_says_goodbye_to_every_peer_and_exits_zero(serve):
    served = serve("--workers", "2", "--drain", "2")
    conns = await _connect_many(served.port, 8)
    started = time.monotonic()
    served.signal(signal.SIGTERM)
    verdicts = await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns)), 5)
    assert {v.cause for v in verdicts} == {peerwatch.Cause.GOODBYE}
    assert all("shutting down" in (v.goodbye_reason or "") for v in verdicts)
    assert served.wait(10) == 0
    assert time.monotonic() - started < 2 + 2  # drain bound + slack
    assert all(pid_gone(pid) for pid in served.pids)
    assert "stopped" in served.out[-1]


async def test_immediate_restart_on_the_same_port_binds_despite_time_wait(serve):
    first = serve("--workers", "2", "--drain", "1")
    port = first.port
    conns = await _connect_many(port, 6)
    # Mute peers (they never send a byte) make the TIME_WAIT certain: the server closes first
    # (GOODBYE, FIN) with nothing unread, so its side ends in TIME_WAIT, not in an RST.
    mute = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    first.signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns)), 5)
    for sock in mute:
        sock.settimeout(5)
        while sock.recv(4096):
            pass
        sock.close()
    assert first.wait(10) == 0
    assert time_wait_on(port) >= len(mute)
    second = serve("--workers", "2", "--port", str(port))
    assert second.port == port
    conn = await peerwatch.connect("127.0.0.1", port)
    await conn.send(b"again")
    assert await asyncio.wait_for(conn.recv(), 5) == b"again"
    assert conn.peer_restarted  # a new run announces a new incarnation
    await conn.close()
    assert time_wait_on(port) > 0  # the restart really happened while TIME_WAIT was there


async def test_a_killed_worker_is_reported_and_restarted_others_untouched(serve):
    served = serve("--workers", "2", "--metrics-port", "0")
    victim, survivor = served.pids
    conns = await _connect_many(served.port, 12)
    on_survivor = established_by_pid(survivor, served.port)
    os.kill(victim, signal.SIGKILL)
    await served.line(rf"worker 0 \(pid {victim}\) was killed by SIGKILL", stream="err")
    replaced = await served.line(
        rf"worker 0 restarted: pid (\d+) replaces pid {victim}", stream="err"
    )
    new_pid = int(replaced[1])
    assert new_pid != victim
    await asyncio.sleep(0.3)
    alive = [c for c in conns if c.verdict is None]
    dead = [c for c in conns if c.verdict is not None]
    assert len(alive) == on_survivor  # exactly the victim's connections are gone
    assert {c.verdict.cause for c in dead} <= {peerwatch.Cause.EOF, peerwatch.Cause.RESET}
    for conn in alive:
        await conn.send(b"still here")
        assert await asyncio.wait_for(conn.recv(), 5) == b"still here"
    assert _listening_pids(served.port, [survivor, new_pid]) == {survivor, new_pid}
    metrics = await served.metrics()
    assert metrics["peerwatch_worker_restarts_total"] == 1
    assert metrics["peerwatch_workers"] == 2
    for conn in alive:
        await conn.close()


async def test_workers_of_a_killed_supervisor_say_goodbye_and_exit(serve):
    served = serve("--workers", "2", "--metrics-port", "0")
    conns = await _connect_many(served.port, 4)
    leftover = {p for pid in served.pids for p in _open_paths(pid) if "/peerwatch-metrics-" in p}
    served.signal(signal.SIGKILL)  # no chance to stop the workers itself
    try:
        verdicts = await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns)), 10)
        assert {v.cause for v in verdicts} == {peerwatch.Cause.GOODBYE}  # PR_SET_PDEATHSIG
        assert all(pid_gone(pid) for pid in served.pids)
    finally:
        for directory in leftover:  # a SIGKILLed supervisor cannot clean up after itself
            shutil.rmtree(directory, ignore_errors=True)


def test_graceful_stop_removes_the_metrics_directory(serve):
    served = serve("--workers", "1", "--metrics-port", "0")
    directories = {
        path for pid in served.pids for path in _open_paths(pid) if "/peerwatch-metrics-" in path
    }
    assert len(directories) == 1  # the worker writes its values there
    (directory,) = directories
    served.signal(signal.SIGTERM)
    assert served.wait(10) == 0
    assert Path(directory).is_absolute()
    assert not Path(directory).exists()


def _open_paths(pid: int) -> list[str]:
    import psutil

    return [Path(f.path).parent.as_posix() for f in psutil.Process(pid).open_files()]


FRAGILE_HANDLER = """
import os
import time

if os.path.exists(os.environ["FRAGILE_FLAG"]):
    time.sleep(1.2)  # a slow start (a loaded machine, a heavy import): still a crash loop
    raise RuntimeError("cannot start: flag file present")


async def handler(conn):
    async for message in conn:
        await conn.send(message)
"""


async def test_a_crash_looping_worker_backs_off_and_recovers(serve, tmp_path: Path):
    (tmp_path / "fragile.py").write_text(FRAGILE_HANDLER)
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FRAGILE_FLAG": str(flag)}
    served = serve("--workers", "2", "--metrics-port", "0", "--handler", "fragile:handler", env=env)
    flag.touch()  # from now on a new worker fails at start-up
    os.kill(served.pids[0], signal.SIGKILL)
    await served.line(r"restart of worker 0 failed: .*flag file present", stream="err")
    delays = [
        float(
            (
                await served.line(
                    rf"worker 0 .* after [\d.]+ s; .* restarting it in {d} s", stream="err"
                )
            )[0].split()[-2]
        )
        for d in ("0.1", "0.2", "0.4")
    ]
    assert delays == [0.1, 0.2, 0.4]  # doubling while it dies young
    assert (await served.metrics())["peerwatch_workers"] == 1  # the other worker serves on
    flag.unlink()
    await served.line(r"worker 0 restarted: pid \d+ replaces", stream="err", timeout=10)
    assert (await served.metrics())["peerwatch_workers"] == 2
    conn = await peerwatch.connect("127.0.0.1", served.port)
    await conn.send(b"back")
    assert await asyncio.wait_for(conn.recv(), 5) == b"back"
    await conn.close()


def test_uvloop_asked_for_but_missing_is_a_configuration_error(tmp_path: Path):
    (tmp_path / "uvloop.py").write_text("raise ImportError('uvloop hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    argv = [sys.executable, "-m", "peerwatch", "serve", "--port", "0", "--uvloop"]
    missing = Proc(argv, env)
    assert missing.wait(20) == 2
    assert any("uvloop was asked for but is not installed" in line for line in missing.err)


def test_bad_handler_and_taken_port_fail_at_start_with_a_reason():
    bad = Proc(
        [sys.executable, "-m", "peerwatch", "serve", "--port", "0", "--handler", "no.such:x"]
    )
    assert bad.wait(20) == 2
    assert any("cannot import 'no.such'" in line for line in bad.err), bad.err
    with socket.socket() as owner:  # a listener without SO_REUSEPORT owns the port
        owner.bind(("127.0.0.1", 0))
        owner.listen()
        port = owner.getsockname()[1]
        taken = Proc([sys.executable, "-m", "peerwatch", "serve", "--port", str(port)])
        assert taken.wait(20) == 1
        metrics_taken = Proc(
            [sys.executable, "-m", "peerwatch", "serve", "--port", "0", "--metrics-port", str(port)]
        )
        assert metrics_taken.wait(20) == 1
    assert any("Address already in use" in line for line in taken.err), taken.err
    assert any("cannot serve metrics" in line for line in metrics_taken.err), metrics_taken.err


USER_SERVER = """
import sys

from peerwatch.server import run_workers


async def shout(conn):
    async for message in conn:
        await conn.send(message.upper())


def ready(info):
    print("READY", info.port, info.loop, *info.pids, flush=True)


if __name__ == "__main__":
    sys.exit(run_workers(shout, "127.0.0.1", 0, workers=2, on_ready=ready))
"""


async def test_user_handler_runs_on_workers_through_the_api(tmp_path: Path):
    script = tmp_path / "user_server.py"
    script.write_text(textwrap.dedent(USER_SERVER))
    proc = Proc([sys.executable, str(script)])
    try:
        line = await proc.line(r"^READY ")
        _, port, loop, *pids = line.string.split()
        assert loop == "asyncio"
        assert len(pids) == 2
        conn = await peerwatch.connect("127.0.0.1", int(port))
        await conn.send(b"quiet")
        assert await asyncio.wait_for(conn.recv(), 5) == b"QUIET"
        proc.signal(signal.SIGINT)
        verdict = await asyncio.wait_for(conn.wait_closed(), 5)
        assert verdict.cause is peerwatch.Cause.GOODBYE
        assert proc.wait(10) == 0
    finally:
        proc.kill()


async def test_workers_on_uvloop_serve_echo(serve):
    pytest.importorskip("uvloop")
    served = serve("--workers", "1", "--uvloop")
    assert served.loop == "uvloop"
    conn = await peerwatch.connect("127.0.0.1", served.port)
    await conn.send(b"fast")
    assert await asyncio.wait_for(conn.recv(), 5) == b"fast"
    await conn.close()


async def test_a_new_server_can_take_over_the_port_while_the_old_one_drains(serve):
    old = serve("--workers", "1", "--drain", "2")
    new = serve("--workers", "1", "--port", str(old.port))  # both in one SO_REUSEPORT group
    assert new.port == old.port
    kept = await peerwatch.connect("127.0.0.1", old.port)
    old.signal(signal.SIGTERM)
    assert old.wait(10) == 0
    # whoever served `kept` before, every connection from now on goes to the new server
    for _ in range(10):
        conn = await peerwatch.connect("127.0.0.1", new.port)
        await conn.send(b"x")
        assert await asyncio.wait_for(conn.recv(), 5) == b"x"
        await conn.close()
    # a connection the old server held got GOODBYE(GOING_AWAY); one the new server held lives
    if kept.verdict is not None:
        assert kept.verdict.cause is peerwatch.Cause.GOODBYE
    await kept.close()


async def test_batch_pings_makes_the_workers_ping_and_their_clients_quiet(serve):
    served = serve("--workers", "2", "--handler", "echo", "--batch-pings", "--interval", "0.2")
    conns = [
        await peerwatch.connect("127.0.0.1", served.port, interval=0.2, timeout=3.0)
        for _ in range(6)
    ]
    try:
        await asyncio.sleep(1.5)  # seven intervals
        for conn in conns:
            assert conn.verdict is None
            assert conn.pings_sent == 0  # the worker pinged first, every time
            assert conn.pings_received >= 4
            await conn.send(b"still there")
            assert await asyncio.wait_for(conn.recv(), 5) == b"still there"
    finally:
        for conn in conns:
            await conn.close()

"""A real Prometheus server (the Debian package) for the exporter tests, on loopback.

``PrometheusServer.start(tmp, target)`` writes a config that scrapes ``target``
every second, starts ``prometheus`` with its data in ``tmp`` and waits until it
answers; ``query()`` asks the HTTP API; ``stop()`` kills it (fixtures call it in
their ``finally``).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: peerwatch-host
    static_configs:
      - targets: ["{target}"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _popen(*argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload,no-any-return]


class PrometheusServer:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    @classmethod
    def start(
        cls,
        tmp: Path,
        target: str,
        address: str | None = None,
        spawn: Callable[..., subprocess.Popen[bytes]] | None = None,
        timeout: float = 30.0,
    ) -> PrometheusServer:
        """Prometheus on ``address`` (a free loopback port by default), started by ``spawn``
        (``NetnsHost.spawn`` runs it in a namespace), scraping ``target`` every second."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (tools/system-deps.sh installs it)")
        (tmp / "prometheus.yml").write_text(CONFIG.format(target=target))
        address = address or f"127.0.0.1:{free_port()}"
        log = tmp / "prometheus.log"
        with log.open("wb") as out:
            proc = (spawn or _popen)(
                binary, f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address={address}",
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = cls(proc, f"http://{address}", log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(server.url + "/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return server
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise AssertionError(f"prometheus did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)

    def query(self, promql: str) -> list[dict[str, object]]:
        """The result vector of an instant query."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

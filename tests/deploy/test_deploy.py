"""deploy/: the alerting rules pass promtool and fire when they should, and every file speaks
of metrics the exporter really exports and of flags the CLI really has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from peerwatch.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "peerwatch-rules.yaml"
DASHBOARD = DEPLOY / "grafana" / "peerwatch-dashboard.json"
DAEMONSET = DEPLOY / "kubernetes" / "peerwatch-exporter.yaml"
METRIC = re.compile(r"\b(peerwatch_host_[a-z_]+|process_cpu_seconds_total)\b")


def promtool(*argv: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (the Debian package prometheus has it)")
    return subprocess.run(
        [binary, *argv], cwd=RULES.parent, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_rules_fire_as_their_unit_tests_say() -> None:
    result = promtool("test", "rules", "peerwatch-rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names() -> set[str]:
    prometheus_client = pytest.importorskip("prometheus_client")
    from peerwatch.exporter.collector import HostCollector

    registry = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)  # as `peerwatch exporter` registers
    registry.register(HostCollector())
    # the families are what the exporter declares; a family without connections to count on
    # this host (a fresh CI machine) has no samples, yet its name is exported all the same
    families = list(registry.collect())
    return {f.name for f in families} | {s.name for f in families for s in f.samples}


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set(METRIC.findall(RULES.read_text())) | set(METRIC.findall("\n".join(exprs)))
    assert used, "no metric found"
    assert used <= exported, used - exported
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_daemonset_runs_a_valid_command_with_read_only_capabilities() -> None:
    text = DAEMONSET.read_text()
    assert "hostNetwork: true" in text and "hostPID: true" in text
    (caps,) = re.findall(r"add: \[(.*)\]", text)
    assert {c.strip() for c in caps.split(",")} == {"SYS_PTRACE", "DAC_READ_SEARCH"}
    assert "drop: [ALL]" in text
    (command,) = re.findall(r"command: \[(.*)\]", text)
    argv = [a.strip().strip('"') for a in command.split(",")]
    assert argv[:2] == ["peerwatch", "exporter"]
    args = build_parser().parse_args([a.replace("$(NODE_IP)", "10.0.0.1") for a in argv[1:]])
    assert (args.host, args.port) == ("10.0.0.1", 9465)
    assert f'prometheus.io/port: "{args.port}"' in text

"""``deploy/``: the compose file is valid (``docker compose config`` where the
client exists; otherwise its YAML and services are checked here), keeps no
payload on a disk (Redis without persistence, the Redis store, tmpfs
spools), and every ``ephemesh`` command that compose, Kubernetes, systemd
and deploy/README.md name parses with the real command line."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from converter.exits import CommandFailed
from web.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _kubernetes() -> list[dict]:
    return [d for p in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]


def _parses(argv: list[str]) -> None:
    assert argv and argv[0] == "ephemesh", argv
    try:
        build_parser().parse_args(argv[1:])
    except (SystemExit, CommandFailed) as exc:  # argparse's refusal, as the CLI makes it
        raise AssertionError(f"not a command of the CLI: {shlex.join(argv)}") from exc


def _subparser(parser, name):
    for action in parser._actions:  # argparse keeps its subparsers only there
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices.get(name)
    return None


def _names_exist(argv: list[str]) -> None:
    """A command named in prose (``ephemesh serve --workers``): its command
    path exists and so does every option it names (values may be left out)."""
    parser, words = build_parser(), argv[1:]
    while words and not words[0].startswith("-"):
        sub = _subparser(parser, words[0])
        if sub is None:
            break
        parser, words = sub, words[1:]
    assert parser.prog != build_parser().prog, f"no such command: {shlex.join(argv)}"
    known = {o for a in parser._actions for o in a.option_strings}
    for word in words:
        if word.startswith("-"):
            assert word.split("=")[0] in known, f"{shlex.join(argv)}: no option {word}"


def _named_commands() -> tuple[list[list[str]], list[list[str]]]:
    """``(commands to run as written, commands named in prose)``."""
    run = [s["command"] for s in _compose()["services"].values()
           if s.get("command", [None])[0] == "ephemesh"]
    for doc in _kubernetes():
        for c in doc["spec"]["template"]["spec"]["containers"]:
            run.append(c["command"] + c.get("args", []))
    for unit in (DEPLOY / "systemd").glob("*.service"):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = shlex.split(line.split("=", 1)[1])
                run.append(["ephemesh", *argv[1:]])
    prose = []
    for text in re.findall(r"(?:`|bin/)ephemesh ([a-z][^`\n#|]*)",
                           (DEPLOY / "README.md").read_text()):
        prose.append(["ephemesh", *shlex.split(text.replace("…", ""))])
    return run, prose


def test_compose_validates_with_docker_where_it_can():
    docker = shutil.which("docker")
    usable = docker and subprocess.run([docker, "compose", "version"],
                                       capture_output=True).returncode == 0
    if not usable:
        pytest.skip("no docker compose client here; test_compose_services checks the file")
    out = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                         capture_output=True, text=True,
                         env={**os.environ, "EPHEMESH_SECRET_KEY": "x" * 64})
    assert out.returncode == 0, out.stderr


def test_compose_services_keep_no_payload_on_a_disk():
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "migrate", "web", "worker", "cron"}
    redis = " ".join(services["redis"]["command"])
    assert '--save  --appendonly no' in redis.replace('""', "")
    assert services["redis"].get("volumes") is None  # nothing of Redis on a volume
    for name in ("migrate", "web", "worker", "cron"):
        env = services[name]["environment"]
        assert env["EPHEMESH_STORE"] == "redis", name  # no shared directory
        assert env["EPHEMESH_REDIS_URL"].startswith("redis://redis:")
        assert env["EPHEMESH_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert not services[name].get("volumes"), name  # a payload never reaches a volume
    web_tmpfs = [t.split(":")[0] for t in services["web"]["tmpfs"]]
    assert services["web"]["environment"]["EPHEMESH_SPOOL_DIR"] in web_tmpfs
    assert "--keep-on-stop" in services["web"]["command"]  # the store is shared
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "--health-port" in services["worker"]["command"]
    for name in ("web", "worker", "cron"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    assert services["migrate"]["command"] == ["ephemesh", "db", "upgrade"]
    assert (DEPLOY / services["migrate"]["build"]["dockerfile"].split("/", 1)[1]).exists()


def test_kubernetes_workers_have_readiness_on_their_health_port():
    docs = {d["metadata"]["name"]: d for d in _kubernetes()}
    assert {"ephemesh-worker", "ephemesh-cron"} <= set(docs)
    assert not [d for d in docs.values() if d["kind"] == "CronJob"]
    worker = docs["ephemesh-worker"]["spec"]["template"]["spec"]["containers"][0]
    port = int(worker["command"][worker["command"].index("--health-port") + 1])
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports[worker["readinessProbe"]["httpGet"]["port"]] == port
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/livez"
    volumes = docs["ephemesh-worker"]["spec"]["template"]["spec"]["volumes"]
    assert all(v["emptyDir"]["medium"] == "Memory" for v in volumes)


def test_every_command_deploy_names_exists():
    run, prose = _named_commands()
    assert len(run) >= 10 and len(prose) >= 5
    for argv in run:
        _parses(argv)
    for argv in prose:
        _names_exist(argv)
    assert {"serve", "worker", "cron", "db"} <= {argv[1] for argv in run}

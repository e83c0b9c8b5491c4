"""The README works as written: after ``scripts/run.sh`` every ``ephemesh …``
command it shows runs (its ``--help`` answers 0 through the ``ephemesh`` that
``run.sh`` put on the PATH), and the facts it states are the code's."""

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

from converter.exits import CommandFailed
from converter.options import OPTIONS
from web.cli import build_parser
from worker.config import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PROSE = " ".join(README.split())


def _subcommands(parser):
    for action in parser._actions:  # argparse keeps its subparsers only there
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return None


def _paths(words):
    """The command paths ``words`` (``keys create lab``, ``subject export|erase``)
    name: the subcommands matched, plus the first word that should have been one
    (so a documented command that does not exist fails its ``--help``)."""
    paths = [[]]
    parser = build_parser()
    for word in words:
        choices = _subcommands(parser)
        if choices is None:
            break
        names = word.split("|")
        if not all(n in choices for n in names):
            return [p + [word] for p in paths]
        paths = [p + [n] for p in paths for n in names]
        parser = choices[names[0]]
    return paths


def readme_commands() -> list[tuple[str, ...]]:
    """Every ``ephemesh …`` command path in the README's code blocks and code spans."""
    lines = [line for block in re.findall(r"```sh\n(.*?)```", README, re.S)
             for line in block.splitlines()]
    lines += re.findall(r"`(ephemesh [^`]+)`", README)
    found = set()
    for line in lines:
        for m in re.finditer(r"(?:^|[\s($|;`])ephemesh((?:[ \t]+[a-z][a-z|-]*(?=[\s)]|$))*)", line):
            found.update(tuple(p) for p in _paths(m.group(1).split()))
    return sorted(found)


def test_the_readme_names_the_commands_it_should():
    commands = readme_commands()
    for expected in [("serve",), ("keys", "create"), ("admin", "add"), ("sample",),
                     ("convert",), ("subject", "erase"), ("receipt", "verify")]:
        assert expected in commands, commands


def test_every_readme_command_works_as_written_after_run_sh(tmp_path):
    bin_dir = tmp_path / "bin"
    env = dict(os.environ, EPHEMESH_BIN_DIR=str(bin_dir),
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(ROOT / "scripts" / "run.sh"), "--help"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (bin_dir / "ephemesh").resolve() == (ROOT / ".venv" / "bin" / "ephemesh").resolve()

    # as a user types it: a shell that finds `ephemesh` on the PATH
    proc = subprocess.run(["bash", "-c", "ephemesh convert --help"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--threshold" in proc.stdout, proc.stderr
    # and every command the README shows answers its --help (in this process: the
    # same parser the console script builds)
    failed = []
    for path in readme_commands():
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args([*path, "--help"])
        except SystemExit as exc:
            if exc.code != 0:
                failed.append(path)
        except CommandFailed:
            failed.append(path)
        else:
            failed.append(path)
    assert not failed, failed


def test_run_sh_says_when_the_link_is_not_on_the_path(tmp_path):
    bin_dir = tmp_path / "elsewhere"
    env = dict(os.environ, EPHEMESH_BIN_DIR=str(bin_dir))
    done = subprocess.run([str(ROOT / "scripts" / "run.sh"), "--help"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{bin_dir} is not on your PATH" in done.stderr
    assert (bin_dir / "ephemesh").is_symlink()


def test_the_readme_states_the_smoothing_default_every_channel_uses():
    default = OPTIONS["smooth"].default
    assert f"smoothing {default} " in PROSE or f"smoothing (default {default}" in PROSE, (
        "the README must state the smoothing default of converter/options.py")
    assert "same default in the browser, the API and the command line" in PROSE


def test_the_readme_says_where_the_data_is_by_default():
    settings = Settings.from_env({})
    assert "`~/.local/state/ephemesh`" in README
    assert settings.data_dir == Path.home() / ".local" / "state" / "ephemesh"
    if settings.store == str(settings.data_dir / "store"):
        # the store's default is a directory there, which is on a disk
        assert "`DATA_DIR/store`" in README and "on disk" in PROSE

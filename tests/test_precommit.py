"""The pre-commit hook, end to end with the real `pre-commit` in temporary git repositories.

`test_real_repo_*` uses the hook the way a project does (`repo:` + `rev:`): pre-commit clones a git
snapshot of this working tree and pip-installs it into its own environment (PyPI is needed for the
dependencies; the pip cache makes it take seconds). `test_local_system_*` runs the same manifest entry
from this environment (`repo: local`, `language: system`) and needs no network at all.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, tomllib

pre_commit = pytest.importorskip("pre_commit")
yaml = pytest.importorskip("yaml")

EVIL_P2 = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."
BENIGN_TORCH = FIXTURES / "benign" / "torch" / "state_dict.pt"
NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "No matching distribution found", "Could not find a version that satisfies")


def _manifest() -> list[dict]:
    from pre_commit.clientlib import load_manifest

    return load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))  # validates against pre-commit's schema


def test_manifest_parses_and_names_the_scan_entry() -> None:
    hooks = {h["id"]: h for h in _manifest()}
    hook = hooks["modelseal"]
    assert hook["language"] == "python"
    argv = shlex.split(hook["entry"])
    assert argv[:2] == ["modelseal", "scan"] and "--format" in argv and argv[argv.index("--format") + 1] == "lines"
    assert argv[-1] == "--", "file names must come after --: never parsed as options"
    assert hook["types"] == ["file"] and hook["pass_filenames"] is True
    # the entry is the installed console script
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["modelseal"] == "scanner.fastscan:main"  # scan fast path, else scanner.cli:main


def _env(tmp: Path) -> dict[str, str]:
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env.update(PRE_COMMIT_HOME=str(tmp / "pre-commit-home"), GIT_CONFIG_GLOBAL=str(gitconfig),
               GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    env["PIP_NO_COMPILE"] = "1"  # the hook environment is thrown away: skip byte-compiling it
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _git(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    out = _run(["git", *args], cwd, env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _hook_repo(tmp: Path, env: dict[str, str]) -> tuple[str, str]:
    """A git snapshot of the working tree with what `pip install .` needs; returns (url, commit)."""
    repo = tmp / "hook-repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("scanner", "rules"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    _git(repo, env, "init", "-q")
    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-q", "-m", "snapshot")
    return repo.as_uri(), _git(repo, env, "rev-parse", "HEAD").stdout.strip()


def _project(tmp: Path, env: dict[str, str], config: dict) -> Path:
    proj = tmp / "project"
    proj.mkdir()
    _git(proj, env, "init", "-q")
    (proj / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = _run([sys.executable, "-m", "pre_commit", "install"], proj, env)
    assert out.returncode == 0, out.stdout + out.stderr
    _git(proj, env, "add", ".pre-commit-config.yaml")
    return proj


def _check_commits(proj: Path, env: dict[str, str]) -> None:
    # a benign torch file and some source files pass
    (proj / "src").mkdir()
    (proj / "src" / "train.py").write_text("import torch\n\nprint(torch.__version__)\n")
    (proj / "README.md").write_text("# project\n")
    (proj / "config.json").write_text('{"hidden_size": 8}\n')
    shutil.copy2(BENIGN_TORCH, proj / "model.pt")
    _git(proj, env, "add", "src/train.py", "README.md", "config.json", "model.pt")
    ok = _run(["git", "commit", "-m", "benign model and source"], proj, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "modelseal" in ok.stdout + ok.stderr and "Passed" in ok.stdout + ok.stderr
    # a hostile pickle is refused, with the finding on its own line
    (proj / "weights.pkl").write_bytes(EVIL_P2)
    (proj / "src" / "util.py").write_text("X = 1\n")
    _git(proj, env, "add", "weights.pkl", "src/util.py")
    bad = _run(["git", "commit", "-m", "hostile pickle"], proj, env)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert "Failed" in out
    lines = [line for line in out.splitlines() if line.startswith("weights.pkl: CRITICAL ")]
    assert lines, out
    assert "util.py" not in out and "model.pt" not in out  # clean files print nothing
    assert _git(proj, env, "log", "--format=%s").stdout.split("\n")[0] == "benign model and source"


def _local_config() -> dict:
    hook = dict(next(h for h in _manifest() if h["id"] == "modelseal"))
    argv = shlex.split(hook["entry"])
    script = Path(sys.executable).parent / "modelseal"
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "scanner.cli"]
    hook.update(language="system", entry=shlex.join([*exe, *argv[1:]]))
    config = {"repos": [{"repo": "local", "hooks": [{k: v for k, v in hook.items()
                                                     if k in {"id", "name", "entry", "language", "types",
                                                              "require_serial", "args"}}]}]}
    return config


def test_local_system_hook_refuses_hostile_commit(tmp_path: Path) -> None:
    env = _env(tmp_path)
    _check_commits(_project(tmp_path, env, _local_config()), env)


def test_staged_file_names_are_never_options(tmp_path: Path) -> None:
    """Files named like options are scanned as files: no config from the tree, no output file, no help."""
    env = _env(tmp_path)
    proj = _project(tmp_path, env, _local_config())
    # a config that would allow the payload, under a name that reads as --config=evil.toml
    (proj / "evil.toml").write_text('[tool.modelseal]\nfail_on = "critical"\nallow_globals = ["posix.system", '
                                    '"os.system"]\n')
    names = ["--help", "--config=evil.toml", "-o", "--output=model.pt", "--output=f", "-h", "--version"]
    for n in names:
        (proj / n).write_text("just text\n")
    (proj / "-o").write_bytes(EVIL_P2)  # an option-looking name is a file like any other: scanned
    shutil.copy2(BENIGN_TORCH, proj / "model.pt")
    (proj / "weights.pkl").write_bytes(EVIL_P2)
    _git(proj, env, "add", "--", "evil.toml", "model.pt", "weights.pkl", *names)
    bad = _run(["git", "commit", "-m", "names"], proj, env)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert [line for line in out.splitlines() if line.startswith("weights.pkl: CRITICAL ")], out
    assert [line for line in out.splitlines() if line.startswith("-o: CRITICAL ")], out
    assert "Usage" not in out and "No such option" not in out and "error" not in out.lower(), out
    assert (proj / "model.pt").read_bytes() == BENIGN_TORCH.read_bytes()
    assert not (proj / "f").exists()
    # the option-named files were given to the scanner as paths
    assert set(names) <= set(os.listdir(proj))


def test_cli_double_dash_makes_every_later_argument_a_path(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scanner.cli import app

    os.chdir(tmp_path)
    for n in ("--help", "--config=x.toml", "-o", "--output=f"):
        Path(n).write_text("text\n")
    res = CliRunner().invoke(app, ["scan", "--format", "lines", "--", "--help", "--config=x.toml", "-o",
                                   "--output=f"])
    assert res.exit_code == 0, res.output
    assert not Path("f").exists() and "Usage" not in res.output


def test_real_repo_hook_refuses_hostile_commit(tmp_path: Path) -> None:
    env = _env(tmp_path)
    url, rev = _hook_repo(tmp_path, env)
    proj = _project(tmp_path, env, {"repos": [{"repo": url, "rev": rev, "hooks": [{"id": "modelseal"}]}]})
    setup = _run([sys.executable, "-m", "pre_commit", "install-hooks"], proj, env)
    if setup.returncode != 0:
        log = setup.stdout + setup.stderr
        log_file = tmp_path / "pre-commit-home" / "pre-commit.log"
        if log_file.exists():
            log += log_file.read_text(errors="replace")
        if any(marker in log for marker in NETWORK_ERRORS):
            pytest.skip("pre-commit could not pip-install the hook: no package index reachable")
        pytest.fail(log)
    _check_commits(proj, env)

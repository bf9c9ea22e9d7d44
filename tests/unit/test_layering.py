"""The layering holds, and the check that enforces it can fail.

`make lint` runs import-linter against the contracts in pyproject.toml. These tests prove the
check bites (a forbidden import injected into a copy of the sources breaks it) and that the pure
modules stay light at run time, which a static graph alone cannot show (a lazy import inside a
package ``__init__`` would escape it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
HEAVY = ("asyncpg", "aiokafka", "faststream", "uvicorn")
SERVICES = ("registry", "trainer", "gatekeeper", "monitor", "notifier")


def _source_roots(base: Path) -> list[Path]:
    roots = sorted([*base.glob("libs/*/src"), *base.glob("services/*/src")])
    assert roots, f"no package sources under {base}"
    return roots


def _copy_sources(dest: Path) -> list[Path]:
    """The Python sources of every workspace package, and the root pyproject (the contracts)."""
    for src in _source_roots(ROOT):
        shutil.copytree(
            src,
            dest / src.relative_to(ROOT),
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return _source_roots(dest)


def _lint_imports(cwd: Path, roots: list[Path]) -> subprocess.CompletedProcess[str]:
    # The copies come first on the path, so they shadow the installed (editable) packages.
    env = {"PYTHONPATH": ":".join(str(r) for r in roots), "PATH": str(LINT_IMPORTS.parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    base = tmp_path_factory.mktemp("layering")
    return base, _copy_sources(base)


def test_the_contracts_hold_on_the_sources_as_they_are(
    clean_copy: tuple[Path, list[Path]],
) -> None:
    base, roots = clean_copy
    result = _lint_imports(base, roots)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module_file", "injected", "broken_contract"),
    [
        # a library reaching into a service (the CLI once imported trainer code)
        ("libs/cli/src/mlcp/cli/emit.py", "import mlcp.trainer.domain", "never import a service"),
        # one service importing another instead of sending it an event
        (
            "services/notifier/src/mlcp/notifier/render.py",
            "import mlcp.registry.domain",
            "independent of each other",
        ),
        # a lower layer importing a higher one
        ("libs/policy/src/mlcp/policy/errors.py", "import mlcp.runtime.kafka", "Layers"),
        # a pure domain loading an I/O library
        (
            "services/gatekeeper/src/mlcp/gatekeeper/domain.py",
            "import asyncpg",
            "load no I/O library",
        ),
        # the client (installed by inference services) pulling in the services' runtime
        (
            "libs/client/src/mlcp/client/router.py",
            "import mlcp.runtime.kafka",
            "neither the runtime",
        ),
    ],
)
def test_lint_imports_fails_on_an_injected_violation(
    clean_copy: tuple[Path, list[Path]], module_file: str, injected: str, broken_contract: str
) -> None:
    base, roots = clean_copy
    target = base / module_file
    assert target.is_file(), module_file
    original = target.read_text()
    target.write_text(original + f"\n{injected}  # injected by the test\n")
    try:
        result = _lint_imports(base, roots)
    finally:
        target.write_text(original)

    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert broken, result.stdout + result.stderr
    assert any(broken_contract in line for line in broken), broken


PURE_MODULES = (
    "mlcp.contracts",
    "mlcp.policy",
    "mlcp.runtime",
    "mlcp.runtime.settings",
    "mlcp.runtime.refusals",
    "mlcp.profiles",
    *(f"mlcp.{service}.domain" for service in SERVICES),
    "mlcp.trainer.ledger",
    "mlcp.trainer.runs",
    "mlcp.registry.transitions",
)


def _heavy_loaded_by(modules: tuple[str, ...]) -> dict[str, list[str]]:
    """Import ``modules`` in turn in one fresh interpreter; after each, the heavy libraries loaded.

    Loading only adds to sys.modules, so the first module after which a heavy library shows up
    is the one that loaded it, and an empty list after the last means none of them did.
    """
    probe = (
        "import importlib, json, sys\n"
        "seen = {}\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"    seen[name] = [m for m in {list(HEAVY)!r} if m in sys.modules]\n"
        "print(json.dumps(seen))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    seen: dict[str, list[str]] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


def test_pure_modules_load_no_io_library() -> None:
    seen = _heavy_loaded_by(PURE_MODULES)
    assert list(seen) == list(PURE_MODULES)
    assert {module: heavy for module, heavy in seen.items() if heavy} == {}


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above would pass vacuously if the probe could not see anything.
    seen = _heavy_loaded_by(("mlcp.runtime", "mlcp.runtime.db"))
    assert seen == {"mlcp.runtime": [], "mlcp.runtime.db": ["asyncpg"]}

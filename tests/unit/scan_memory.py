"""Peak memory of the artifact scan on the corpus' worst cases, by the process's own accounting.

Each case is built in this process, then scanned in a fresh child process that imports
everything first, resets its peak-RSS mark (``/proc/self/clear_refs``), scans, and reports its
peak RSS (``VmHWM``) minus its RSS just before the scan. (``ru_maxrss`` is no use after imports:
it also keeps the peak that any exiting thread recorded, such as the import's own.)

    uv run python -m tests.unit.scan_memory            # every case, one line each
    uv run python -m tests.unit.scan_memory one-gib-file
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mlcp.artifacts import ArtifactLimits
from mlcp.artifacts.limits import GiB
from tests.builders import HOSTILE, op_str, sha256_of, stream, zip_of

BOUND_MIB = 128
"""The scan's memory bound with the default limits (docs/security.md)."""

NO_RATIO = 1e9
"""The ratio check switched off: the bombs are inflated in full, the worst the budget allows."""


@dataclass(frozen=True)
class Case:
    name: str
    hostile: str | None
    limits: dict[str, float]
    """Overrides of the default limits (to reach the worst case the defaults would stop)."""


CASES = (
    # 1 GiB read through the opcode scan (a 1 GiB argument skipped, the payload behind it).
    Case("one-gib-file", "one-gib-file", {"max_bytes": 2 * GiB}),
    # 1 GiB inflated from gzip, ratio check off: only the budget bounds it.
    Case("gzip-bomb-inflated", "decompression-bomb-gzip", {"max_ratio": NO_RATIO}),
    Case("zip-bomb-inflated", "decompression-bomb-zip", {"max_ratio": NO_RATIO}),
    Case("many-opcodes", "many-opcodes", {}),
    Case("nested-containers", "nested-containers", {}),
    # The largest skops schema the defaults admit: ~45,000 nodes in just under 16 MiB.
    Case("skops-schema", None, {}),
    # The most the opcode scan remembers: ~100,000 memoised 128-character strings (every one
    # tracked, since any could name a global), within the opcode limit.
    Case("memo-strings", None, {}),
)


def build(case: Case, directory: Path) -> dict[str, object]:
    """Write the case under ``directory``; the child's instructions."""
    root = directory / "root"
    root.mkdir()
    if case.name == "memo-strings":
        body = b"(" + b"".join(op_str(f"{i:0128d}") for i in range(99_990)) + b"t"
        path = root / "strings.pkl"
        path.write_bytes(stream(body))
        fmt = "pickle"
    elif case.hostile is None:
        node = (
            '{"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",'
            ' "content": "' + "x" * 250 + '", "is_json": true},'
        )
        schema = (
            '{"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": ['
            + (node * 45_000)[:-1]
            + '], "protocol": 2, "_skops_version": "0.16.0"}'
        )
        path = root / "schema.skops"
        path.write_bytes(zip_of({"schema.json": schema.encode()}, zipfile.ZIP_STORED))
        fmt = "skops"
    else:
        hostile = next(h for h in HOSTILE if h.name == case.hostile)
        built = hostile.write(root, directory / "payload-ran")
        path, fmt = built.path, built.format
    return {
        "root": str(root),
        "uri": path.as_uri(),
        "sha256": sha256_of(path),
        "format": fmt,
        "limits": case.limits,
        "marker": str(directory / "payload-ran"),
    }


def _status_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak since the last reset), in KiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1])


def child(spec: dict[str, object]) -> dict[str, object]:
    """In the child: scan once and report the peak growth in MiB."""
    import picklescan.scanner  # noqa: F401  # imports are the baseline, not the scan
    import skops.io  # noqa: F401

    from mlcp.artifacts import ArtifactPolicy, FileStore, scan_artifact

    limits = ArtifactLimits(**spec["limits"])  # type: ignore[arg-type]
    store = FileStore(Path(str(spec["root"])))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak-RSS mark (VmHWM)
    before = _status_kib("VmRSS")
    result = scan_artifact(
        str(spec["uri"]),
        str(spec["sha256"]),
        str(spec["format"]),
        store=store,
        policy=ArtifactPolicy(allow_pickle=True),
        limits=limits,
    )
    peak = _status_kib("VmHWM")
    return {
        "peak_mib": round((peak - before) / 1024, 1),
        "causes": [f.cause for f in result.findings],
        "reason": result.reason,
        "payload_ran": Path(str(spec["marker"])).exists(),
    }


def measure(case: Case, directory: Path) -> dict[str, object]:
    """Build ``case`` here and scan it in a fresh child; its report."""
    spec = build(case, directory)
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.scan_memory", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"case": case.name, **report}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        print(json.dumps(child(json.loads(argv[1]))))
        return
    wanted = [c for c in CASES if not argv or c.name in argv]
    print(f"{'case':<22} {'peak (MiB)':>10}  verdict")
    for case in wanted:
        with tempfile.TemporaryDirectory(prefix="mlcp-scan-memory-") as directory:
            report = measure(case, Path(directory))
        print(f"{case.name:<22} {report['peak_mib']:>10}  {str(report['reason'])[:90]}")
    print(f"bound: {BOUND_MIB} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])

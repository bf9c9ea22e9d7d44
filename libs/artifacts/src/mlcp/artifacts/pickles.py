"""Pickle streams, decided opcode by opcode against the exact allow-list — never executed.

The scanner runs the unpickler's stack machine symbolically (``pickletools``' opcode table, the
same checks as ``pickletools.dis``): strings and memo entries are tracked so that every global
is known as the exact ``(module, qualified name)`` the unpickler would import, however it was
spelled (``GLOBAL``, ``STACK_GLOBAL`` over memoised strings, ``INST``). It refuses:

* any global not on the allow-list (a dotted path under an allowed module included);
* opcodes that reach outside the stream: the copyreg extension registry (``EXT1/2/4``),
  persistent ids (``PERSID``, ``BINPERSID``), out-of-band buffers (``NEXT_BUFFER``), and a
  ``STACK_GLOBAL`` whose operands are not constant strings;
* a protocol below 2, bytes after ``STOP`` (a second stream), more opcodes than the limit, and a
  stream that cannot be parsed to its end (fail closed).

Memory stays bounded: arguments longer than ``SMALL_ARG`` bytes (array buffers) are skipped in
chunks, never held. The stream's skeleton (every opcode, long arguments emptied) goes to
picklescan as the second opinion.

``RestrictedUnpickler`` is the load-time half: its ``find_class`` returns exactly the allowed
globals and refuses everything else, so a stream that slipped past a scan still cannot import
anything else.
"""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
from dataclasses import dataclass
from typing import IO, Any

from mlcp.artifacts.allowlist import describe_global, display_global
from mlcp.artifacts.findings import Cause, Finding
from mlcp.artifacts.limits import ArtifactLimits
from mlcp.artifacts.policy import ArtifactPolicy

SMALL_ARG = 256
"""Arguments up to this many bytes are read (and kept in the skeleton); longer ones skipped."""
MAX_NAME = 128
"""Strings longer than this are not tracked: no allowed module or name is that long."""
MAX_LINE = 4096
"""Protocol-0 argument lines longer than this are skipped (never held); a global's is refused."""

_OPS = {op.code.encode("latin-1")[0]: op for op in pickletools.opcodes}
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_STRING_OPS = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)
_REFUSED_OPS = {
    "EXT1": "the copyreg extension registry resolves a global outside the stream",
    "EXT2": "the copyreg extension registry resolves a global outside the stream",
    "EXT4": "the copyreg extension registry resolves a global outside the stream",
    "PERSID": "a persistent id loads an object from outside the stream",
    "BINPERSID": "a persistent id loads an object from outside the stream",
    "NEXT_BUFFER": "an out-of-band buffer comes from outside the stream",
}
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# What a skipped (over-long) line argument becomes in the skeleton: a valid short one.
_EMPTY_LINE_ARG = {"STRING": b"''\n", "INT": b"0\n", "LONG": b"0L\n", "FLOAT": b"0\n"}
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MARK = object()
_ANY = object()


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


class _Malformed(Exception):
    """The stream is not a pickle the unpickler would accept."""


class PickleScan:
    """One pass over one pickle stream (``run``); findings go to ``findings``."""

    def __init__(
        self,
        stream: io.BufferedReader,
        where: str,
        policy: ArtifactPolicy,
        limits: ArtifactLimits,
        findings: list[Finding],
        skeleton: IO[bytes] | None = None,
    ) -> None:
        self._in = stream
        self.where = where
        self._allowed = policy.pickle_globals()
        self._allow_pickle = policy.allow_pickle
        self._max_ops = limits.max_pickle_opcodes
        self._findings = findings
        self._skeleton = skeleton
        self._offset = 0
        self._ops = 0
        self._stack: list[object] = []
        self._marks: list[int] = []
        self._memo: dict[int, object] = {}
        self.is_pickle = False
        self.protocol: int | None = None
        self.complete = False
        """Parsed to STOP with nothing after it: the skeleton is a whole stream."""

    # -- driving ----------------------------------------------------------------------------------
    def run(self, *, strict: bool) -> bool:
        """Scan the stream; True when it is a pickle. With ``strict`` (a declared pickle format)
        it is one from the first byte; else it becomes one when it reaches an opcode that makes
        the unpickler import or fetch something, and a parse error before that means "not a
        pickle" (ONNX, JSON, text …) rather than a finding."""
        if strict:
            self._become()
        try:
            self._loop()
        except _Malformed as exc:
            if self.is_pickle:
                self._add(
                    "malformed",
                    f"the pickle stream cannot be parsed to its end ({exc} at byte {self._offset});"
                    " what follows would go unchecked",
                )
        if self.is_pickle and (self.protocol is None or self.protocol < 2):
            self._add("format", "a pickle of protocol 0 or 1: only protocol 2 and above are read")
        return self.is_pickle

    def _loop(self) -> None:
        while True:
            if self._ops >= self._max_ops:
                self._become()
                self._add(
                    "malformed",
                    f"more than {self._max_ops} opcodes (MLCP_ARTIFACT_MAX_PICKLE_OPCODES)",
                )
                return
            at = self._offset
            code = self._read(1)
            op = _OPS.get(code[0])
            if op is None:
                raise _Malformed(f"unknown opcode 0x{code[0]:02x}")
            arg, raw = self._argument(op)
            self._ops += 1
            self._step(op, arg, at)
            if self._skeleton is not None and op.name != "FRAME":
                self._skeleton.write(code + raw)
            if op.name == "STOP":
                break
        if self._stack:
            raise _Malformed("the stack is not empty at STOP")
        if self._in.read(1):
            self._add(
                "malformed",
                f"bytes follow the pickle's STOP at byte {self._offset - 1}: a second stream"
                " that a loader reading on would run unchecked",
            )
            return
        self.complete = True

    # -- reading ----------------------------------------------------------------------------------
    def _read(self, n: int) -> bytes:
        data = self._in.read(n)
        self._offset += len(data)
        if len(data) < n:
            raise _Malformed("the stream ends before STOP")
        return data

    def _skip(self, n: int) -> None:
        while n:
            n -= len(self._read(min(n, 1 << 20)))

    def _line(self) -> bytes | None:
        """One argument line; None for a line longer than ``MAX_LINE`` (skipped in chunks: the
        unpickler accepts any length, so a long line must not end the scan early)."""
        line = self._in.readline(MAX_LINE + 1)
        self._offset += len(line)
        if line.endswith(b"\n"):
            return line
        if len(line) <= MAX_LINE:
            raise _Malformed("an argument line is unterminated")
        while not line.endswith(b"\n"):
            line = self._in.readline(1 << 20)
            self._offset += len(line)
            if not line:
                raise _Malformed("an argument line is unterminated")
        return None

    def _argument(self, op: pickletools.OpcodeInfo) -> tuple[Any, bytes]:
        """The opcode's argument (``None`` for a skipped long one) and its raw bytes for the
        skeleton (an empty argument for a skipped one)."""
        spec = op.arg
        if spec is None:
            return None, b""
        if spec.n >= 0:
            raw = self._read(spec.n)
        elif spec.n == pickletools.UP_TO_NEWLINE:
            line = self._line()
            if op.name in ("GLOBAL", "INST"):
                second = self._line()
                if line is None or second is None:
                    return None, b"\n\n"
                return _pair(line + second), line + second
            if line is None:
                return None, _EMPTY_LINE_ARG.get(op.name, b"\n")
            raw = line
        else:
            size, signed = _LENGTH_PREFIX[spec.n]
            prefix = self._read(size)
            length = int.from_bytes(prefix, "little", signed=signed)
            if length < 0:
                raise _Malformed(f"{op.name} with a negative length")
            if length > SMALL_ARG:
                self._skip(length)
                return None, bytes(size)
            raw = prefix + self._read(length)
        try:
            return spec.reader(io.BytesIO(raw)), raw
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Malformed(f"{op.name} argument: {exc}") from None

    # -- the stack machine ------------------------------------------------------------------------
    def _step(self, op: pickletools.OpcodeInfo, arg: Any, at: int) -> None:
        name = op.name
        if name == "PROTO":
            self.protocol = arg
            if at != 0:
                # The unpickler accepts it anywhere: a stream that hides one is a pickle, and
                # the scan reads on to name what follows.
                self._become()
                self._add("malformed", f"PROTO after the first opcode (at byte {at})")
        elif name in _REFUSED_OPS:
            self._become()
            self._add("opcode_refused", f"opcode {name} is refused: {_REFUSED_OPS[name]}")
        pushed: object = _ANY
        if name in ("GLOBAL", "INST"):
            self._become()
            if arg is None:
                self._add("global_refused", f"{name} with a name over {MAX_LINE} bytes")
            else:
                pushed = self._judge(*arg)
        elif name == "STACK_GLOBAL":
            self._become()
            if len(self._stack) < 2:
                raise _Malformed("STACK_GLOBAL on a short stack")
            module, qualname = self._stack[-2], self._stack[-1]
            if isinstance(module, str) and isinstance(qualname, str):
                pushed = self._judge(module, qualname)
            else:
                self._add(
                    "opcode_refused",
                    "STACK_GLOBAL is refused: its module and name are not constant strings",
                )
        elif name in _STRING_OPS and isinstance(arg, str) and len(arg) <= MAX_NAME:
            pushed = arg
        self._effect(op, arg, pushed)

    def _effect(self, op: pickletools.OpcodeInfo, arg: Any, pushed: object) -> None:
        """The opcode's stack and memo effect, with the unpickler's own sanity checks."""
        before, after = op.stack_before, op.stack_after
        if op.name in ("MEMOIZE", "READONLY_BUFFER", "DUP"):
            # They leave the top where it is: a memoised string stays a string.
            if not self._stack or self._stack[-1] is _MARK:
                raise _Malformed(f"{op.name} with nothing on the stack")
            if op.name == "MEMOIZE":
                self._memo[len(self._memo)] = self._stack[-1]
            elif op.name == "DUP":
                self._stack.append(self._stack[-1])
            return
        pops = len(before)
        if pickletools.markobject in before or (
            op.name == "POP" and self._stack and self._stack[-1] is _MARK
        ):
            if not self._marks:
                raise _Malformed(f"{op.name} without a MARK")
            depth = self._marks.pop()
            del self._stack[depth:]
            pops = before.index(pickletools.markobject) if pickletools.markobject in before else 0
        if op.name in _PUT_OPS:
            if not self._stack or self._stack[-1] is _MARK:
                raise _Malformed(f"{op.name} with nothing to store")
            self._memo[arg] = self._stack[-1]
        elif op.name in _GET_OPS:
            if arg not in self._memo:
                raise _Malformed(f"{op.name} of memo key {arg} that was never stored")
            pushed = self._memo[arg]
        if len(self._stack) < pops:
            raise _Malformed(f"{op.name} pops {pops} items from a stack of {len(self._stack)}")
        if pops:
            del self._stack[-pops:]
        for item in after:
            if item is pickletools.markobject:
                self._marks.append(len(self._stack))
                self._stack.append(_MARK)
            else:
                self._stack.append(pushed)

    # -- verdicts ---------------------------------------------------------------------------------
    def _become(self) -> None:
        """From here on this stream is a pickle: a loader would act on it."""
        if self.is_pickle:
            return
        self.is_pickle = True
        if not self._allow_pickle:
            self._add(
                "pickle_not_allowed",
                "a pickle stream, and this model does not allow pickle "
                "(artifact.allow_pickle in its config); save it with skops",
            )

    def _judge(self, module: str, qualname: str) -> _Global:
        if (module, qualname) not in self._allowed:
            if module == "joblib.numpy_pickle" and qualname == "NumpyArrayWrapper":
                self._add(
                    "global_refused",
                    "global joblib.numpy_pickle.NumpyArrayWrapper is refused: joblib writes raw "
                    "array buffers into the stream after it, which no opcode scan can vouch "
                    "for; save the model with skops",
                    name=display_global(module, qualname),
                )
            else:
                self._add(
                    "global_refused",
                    describe_global(module, qualname),
                    name=display_global(module, qualname),
                )
        return _Global(module, qualname)

    def _add(self, cause: Cause, message: str, name: str | None = None) -> None:
        finding = Finding(cause, message, self.where, name)
        if finding not in self._findings:
            self._findings.append(finding)


def _pair(raw: bytes) -> tuple[str, str]:
    """``b"module\\nname\\n"`` of GLOBAL / INST, decoded as the unpickler does (UTF-8)."""
    try:
        module, name, _ = raw.decode("utf-8").split("\n")
    except (UnicodeDecodeError, ValueError):
        raise _Malformed("GLOBAL argument is not two UTF-8 lines") from None
    return module, name


def second_opinion(skeleton: IO[bytes], where: str, findings: list[Finding]) -> None:
    """Ask picklescan about the skeleton; a global it calls dangerous that the allow-list let
    through (it never should) is a finding, and so is a skeleton it cannot parse."""
    from picklescan.scanner import SafetyLevel, scan_pickle_bytes  # type: ignore[import-untyped]

    skeleton.seek(0)
    result = scan_pickle_bytes(skeleton, where, multiple_pickles=False)
    named = {f.name for f in findings}
    for found in result.globals:
        shown = display_global(found.module, found.name)
        if found.safety is SafetyLevel.Dangerous and shown not in named:
            findings.append(
                Finding(
                    "second_opinion",
                    f"picklescan calls global {shown} dangerous",
                    where,
                    name=shown,
                )
            )
    if result.scan_err:
        findings.append(Finding("second_opinion", "picklescan cannot parse the stream", where))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that imports exactly the allowed ``(module, qualified name)`` pairs."""

    def __init__(self, stream: IO[bytes], allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(stream)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(describe_global(module, name))
        found: Any = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are refused")

"""Fuzzing the .nnr decoder: mutated files decoded in forked, memory- and time-limited workers.

    fuzzer = Fuzzer(master_seed=1)
    stats = fuzzer.run(range(3000), out=Path("/tmp/fuzz-out"))

Inputs come from conformance/mutations.py and are reproducible from (master seed, input
index): :meth:`Fuzzer.sample` rebuilds any of them. Each input goes through ``nnr.decode``,
the lazy reader (``open``, ``info``, ``get_tensor`` of every key) and ``nnr-info`` with and
without ``--json``. Outcomes:

    ok                   every call succeeded
    refused:<Error>      an NnrError was raised (a clean refusal)
    exception:<Type>     any other exception, MemoryError and RecursionError included
    cli:<what>           nnr-info broke its contract (bad JSON, traceback, extra lines,
                         raw control characters, exit status other than 0 or 3)
    accepted:<rule>      nnr.decode returned a model for a file that breaks a rule of
                         formats/SPEC.md (mutations.violations)
    crash:<SIGNAL>       the worker died (SIGABRT, SIGSEGV, SIGKILL by the kernel, ...)
    timeout              no answer within the per-input timeout
    fuzzer:<Type>        the mutator itself failed (a bug here, not in nnr)

Everything but ``ok`` and ``refused:*`` is a failure. Workers are forked from a parent that
has imported and warmed up nnr, so each costs milliseconds to start; a worker that times out
or dies is replaced and the run goes on.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Iterable

from conformance.mutations import Sample, Seed, load_seeds, mutate, parse, violations
from nnr.errors import NnrError

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "conformance" / "vectors"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MEMORY = 3 << 30
PROJECT_DIRS = tuple(str(ROOT / d) + os.sep for d in ("nnr", "codec", "formats"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
DETAIL_CHARS = 1500
RECYCLE = 2000
"""Inputs a worker decodes before a fresh one replaces it (bounds heap growth and leaked state)."""


@dataclass
class Verdict:
    """What a target made of one input: the outcome, the stage that decided it, and why."""

    outcome: str
    stage: str = ""
    detail: str = ""
    where: str = ""


@dataclass
class Result:
    index: int
    outcome: str
    stage: str
    detail: str
    where: str
    seed: str
    mutations: list[str]
    seconds: float
    path: str = ""

    @property
    def failed(self) -> bool:
        return is_failure(self.outcome)

    def key(self) -> str:
        """The failure class: outcome, stage, and the innermost project frame (or the message)."""
        plain = self.outcome.startswith(("accepted:", "timeout", "cli:"))
        cause = self.where if plain else self.where or _pattern(self.detail)
        return " ".join(x for x in (self.outcome, f"@{self.stage}" if self.stage else "", cause) if x)


def is_failure(outcome: str) -> bool:
    return not (outcome == "ok" or outcome.startswith("refused:"))


def _pattern(message: str) -> str:
    """A message with numbers and quoted text blanked, so one bug gives one class."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first))[:100]


# ---- the target --------------------------------------------------------------------------

def _where(tb) -> str:
    """file:line function of the innermost frame in nnr's own code."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename.startswith(PROJECT_DIRS)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.relpath(f.filename, ROOT)}:{f.lineno} {f.name}"


def _raised(exc: BaseException, stage: str) -> Verdict:
    if isinstance(exc, NnrError):
        return Verdict(f"refused:{type(exc).__name__}", stage, str(exc)[:DETAIL_CHARS])
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-4:])
    return Verdict(f"exception:{type(exc).__name__}", stage,
                   f"{type(exc).__name__}: {str(exc)[:300]}\n{tail[-DETAIL_CHARS:]}", _where(exc.__traceback__))


def _api_stages(data: bytes, violations: list[str]) -> list[Verdict]:
    import nnr

    found = []
    try:
        nnr.decode(data)
        found.append(Verdict(f"accepted:{violations[0]}", "decode", ", ".join(violations)) if violations
                     else Verdict("ok"))
    except BaseException as exc:  # noqa: BLE001 - every exception is an outcome to record
        found.append(_raised(exc, "decode"))
    stage = "open"
    try:
        f = nnr.open(data)
        stage = "info"
        f.info()
        stage = "get_tensor"
        for key in f.keys():
            f.get_tensor(key)
        found.append(Verdict("ok"))
    except BaseException as exc:  # noqa: BLE001
        found.append(_raised(exc, stage))
    return found


def _json_strict(text: str) -> None:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    json.loads(text, parse_constant=refuse)


def _cli_contract(stage: str, rc: int, out: str, err: str) -> Verdict:
    """The promises of nnr-info: no raw control characters; on success JSON if asked for; on
    failure one line on stderr, no traceback, exit status 3 (formats/SPEC.md section 6)."""
    shown = f"exit {rc}\nstdout: {out[-500:]!r}\nstderr: {err[-500:]!r}"
    raw = CONTROL.search(out + err)
    if raw:
        near = (out + err)[max(0, raw.start() - 60):raw.end() + 60]
        return Verdict("cli:control_chars", stage, f"{raw.group()!r} printed in {near!r}\n{shown}")
    if rc == 0:
        try:
            if "--json" in stage:
                _json_strict(out)
        except (ValueError, RecursionError) as exc:
            return Verdict("cli:bad_json", stage, f"{exc}\n{shown}")
        return Verdict("ok")
    if "Traceback" in err:
        return Verdict("cli:traceback", stage, shown)
    if len(err.rstrip("\n").split("\n")) != 1:
        return Verdict("cli:stderr_lines", stage, shown)
    if rc != 3:
        return Verdict(f"cli:exit_{rc}", stage, shown)
    return Verdict("ok")


def _cli_run(path: str, flags: list[str]) -> Verdict:
    from nnr.cli import info_main

    stage = " ".join(["cli"] + flags)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = info_main([path] + flags)
    except BaseException as exc:  # noqa: BLE001
        return _raised(exc, stage)
    return _cli_contract(stage, rc, out.getvalue(), err.getvalue())


def _cli_stages(data: bytes, path: str) -> list[Verdict]:
    """nnr-info --json and the text table nnr-info prints to a terminal, on the file at ``path``."""
    with open(path, "wb") as fh:
        fh.write(data)
    return [_cli_run(path, ["--json"]), _cli_run(path, [])]


RANK = ("exception:", "cli:", "accepted:", "refused:", "ok")


def _worst(verdicts: list[Verdict]) -> Verdict:
    """The verdict to report: failures before refusals before ok, the earliest stage first."""
    def rank(v: Verdict) -> int:
        return next(i for i, p in enumerate(RANK) if v.outcome.startswith(p))

    return min(verdicts, key=rank)


def check_decoder(sample: Sample, scratch: str) -> Verdict:
    """Decode one input through every entry point; ``scratch`` is a file path nnr-info reads."""
    return _worst(_api_stages(sample.data, sample.violations) + _cli_stages(sample.data, scratch))


# ---- workers -----------------------------------------------------------------------------

Target = Callable[[Sample, str], Verdict]


def _scratch_dir() -> str:
    shm = Path("/dev/shm")
    return tempfile.mkdtemp(prefix="nnr-fuzz-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)


@dataclass
class Answer:
    index: int
    verdict: Verdict
    seconds: float
    seed: str = ""
    mutations: list[str] = field(default_factory=list)


@dataclass
class _Worker:
    proc: multiprocessing.Process
    conn: object
    log: str
    index: int | None = None
    since: float = 0.0
    done: int = 0


def _serve(conn, pool: Pool, log: str) -> None:
    """Worker loop: limit memory, then answer each input index with an Answer. Python stacks go
    to ``log`` on a fatal signal and just before the parent's timeout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (pool.memory, pool.memory))
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    faulthandler.enable(file=2)
    warnings.simplefilter("always")
    path = os.path.join(pool.scratch, f"input-{os.getpid()}.nnr")
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        if index is None:
            return
        if os.fstat(2).st_size:
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)
        t0 = time.perf_counter()
        faulthandler.dump_traceback_later(max(0.1, 0.9 * pool.timeout), file=2)
        try:
            sample = pool.make(index)
        except Exception as exc:  # noqa: BLE001 - a mutator bug is reported, not fatal
            sample = Sample(b"", "", [], [])
            verdict = Verdict(f"fuzzer:{type(exc).__name__}", "mutate", traceback.format_exc()[-DETAIL_CHARS:])
        else:
            try:
                verdict = pool.target(sample, path)
            except BaseException as exc:  # noqa: BLE001 - a target that raises still gets a verdict
                verdict = _raised(exc, "target")
        faulthandler.cancel_dump_traceback_later()
        conn.send(Answer(index, verdict, time.perf_counter() - t0, sample.seed, sample.mutations))


def _stopped(worker: _Worker, timed_out: bool, timeout: float) -> Verdict:
    """The verdict on a worker that died or was too slow (then it is killed here)."""
    if timed_out:
        worker.proc.kill()
    worker.proc.join(timeout=5)
    if worker.proc.is_alive():
        worker.proc.kill()
        worker.proc.join()
    try:
        log = Path(worker.log).read_bytes().decode("utf-8", "replace")
    except OSError:
        log = ""
    detail, where = _crash_detail(log)
    if timed_out:
        return Verdict("timeout", "worker", f"no answer within {timeout:g} s\n{detail}", where)
    code = worker.proc.exitcode
    name = signal.Signals(-code).name if code is not None and code < 0 else f"exit{code}"
    return Verdict(f"crash:{name}", "worker", detail, where)


FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def _crash_detail(log: str) -> tuple[str, str]:
    """The first lines of a dead worker's stderr (e.g. a Rust panic) and the Python stack that
    faulthandler wrote, with the innermost nnr frame as the crash's location."""
    lines = log.splitlines()
    frames = [line.strip() for line in lines if FRAME.search(line)]
    frames = frames[:next((i for i, f in enumerate(frames) if __file__ in f), len(frames))]
    detail = "\n".join(lines[:3] + ["Python stack, most recent call first:"] + frames[:12])
    project = [m for m in map(FRAME.search, frames) if m.group(1).startswith(PROJECT_DIRS)]
    if not project:
        return detail[-DETAIL_CHARS:], ""
    path, line, func = project[0].groups()
    return detail[-DETAIL_CHARS:], f"{os.path.relpath(path, ROOT)}:{line} {func}"


class Pool:
    """Forked workers answering input indices, each under a memory limit and a per-input timeout,
    each replaced by a fresh fork after ``recycle`` inputs."""

    def __init__(self, make: Callable[[int], Sample], target: Target, workers: int = 1,
                 timeout: float = DEFAULT_TIMEOUT, memory: int = DEFAULT_MEMORY, recycle: int = RECYCLE) -> None:
        self.make, self.target, self.size = make, target, workers
        self.timeout, self.memory, self.recycle = timeout, memory, recycle
        self.ctx = multiprocessing.get_context("fork")
        self.scratch = _scratch_dir()
        self.workers: list[_Worker] = []
        self._spawned = 0

    def _spawn(self) -> _Worker:
        self._spawned += 1
        log = os.path.join(self.scratch, f"worker-{self._spawned}.stderr")
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_serve, args=(child, self, log), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent, log)

    def _feed(self, worker: _Worker, indices) -> bool:
        index = next(indices, None)
        if index is None:
            worker.index = None
            return False
        worker.index, worker.since = index, time.monotonic()
        worker.conn.send(index)
        return True

    def _replace(self, worker: _Worker) -> _Worker:
        if worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join()
        worker.conn.close()
        with contextlib.suppress(OSError):
            os.unlink(worker.log)
        fresh = self._spawn()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def _answer(self, worker: _Worker, now: float, ready: list) -> Answer | None:
        """The worker's answer, a crash or timeout verdict, or None while it is still busy."""
        index, elapsed = worker.index, now - worker.since
        if worker.conn in ready or worker.proc.sentinel in ready:
            try:
                if worker.conn.poll():
                    return worker.conn.recv()
            except (EOFError, OSError):
                pass
            return Answer(index, _stopped(worker, False, self.timeout), elapsed)
        if elapsed > self.timeout:
            return Answer(index, _stopped(worker, True, self.timeout), elapsed)
        return None

    def run(self, indices: Iterable[int], report: Callable[[Answer], None]) -> None:
        """Send every index to a worker and ``report`` each answer as it comes."""
        indices = iter(indices)
        self.workers = [self._spawn() for _ in range(self.size)]
        try:
            busy = [w for w in self.workers if self._feed(w, indices)]
            while busy:
                deadline = min(w.since for w in busy) + self.timeout
                ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                             max(0.0, deadline - time.monotonic()) + 0.01)
                now = time.monotonic()
                for worker in list(busy):
                    answer = self._answer(worker, now, ready)
                    if answer is None:
                        continue
                    report(answer)
                    worker.done += 1
                    if worker.done >= self.recycle or answer.verdict.outcome.startswith(("crash:", "timeout")):
                        busy.remove(worker)
                        worker = self._replace(worker)
                        busy.append(worker)
                    if not self._feed(worker, indices):
                        busy.remove(worker)
        finally:
            self.close()

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(OSError, ValueError):
                w.conn.send(None)
        for w in self.workers:
            w.proc.join(timeout=2)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
        shutil.rmtree(self.scratch, ignore_errors=True)


# ---- the fuzzer ----------------------------------------------------------------------------

def default_seed_files(extra_dirs: Iterable[Path] = ()) -> list[Path]:
    """The reference, robustness and hostile vectors, then ``*.nnr`` of each extra directory, sorted."""
    files = sorted(VECTORS.glob("v*/*.nnr")) + sorted((VECTORS / "robustness").glob("*.nnr")) \
        + sorted((VECTORS / "hostile").glob("*.nnr"))
    for d in extra_dirs:
        files += sorted(Path(d).glob("*.nnr"))
    return files


def warm_up(seed: bytes) -> None:
    """Import and run every decoder path once in the parent, so forked workers start warm."""
    import nnr
    from nnr.cli import info_main  # noqa: F401

    with contextlib.suppress(NnrError):
        f = nnr.open(seed)
        f.info()
        nnr.decode(seed)


@dataclass
class Stats:
    """Counts per outcome, failures grouped by class with the mutations and seeds behind them,
    the slowest inputs."""

    counts: Counter = field(default_factory=Counter)
    classes: dict = field(default_factory=dict)
    mutation_totals: Counter = field(default_factory=Counter)
    slowest: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failures(self) -> int:
        return sum(n for o, n in self.counts.items() if is_failure(o))

    def add(self, result: Result) -> None:
        kinds = {m.split(":")[0] for m in result.mutations}
        self.counts[result.outcome] += 1
        self.mutation_totals.update(kinds)
        self.slowest = sorted(self.slowest + [(result.seconds, result.index, result.mutations)], reverse=True)[:10]
        if not result.failed:
            return
        c = self.classes.setdefault(result.key(), {"outcome": result.outcome, "stage": result.stage,
                                                   "where": result.where, "count": 0, "mutations": Counter(),
                                                   "seeds": Counter(), "example": asdict(result)})
        c["count"] += 1
        c["mutations"].update(kinds)
        c["seeds"][result.seed] += 1

    def triggers(self, key: str) -> list[str]:
        """The mutations over-represented in a failure class: share of the class and lift over
        their share of all inputs."""
        c = self.classes[key]
        found = []
        for kind, n in c["mutations"].items():
            share = n / c["count"]
            lift = share / (self.mutation_totals[kind] / max(self.total, 1))
            if share >= 0.2 and lift >= 1.5:
                found.append((lift, f"{kind} ({100 * share:.0f}% of class, {lift:.1f}x)"))
        return [text for _, text in sorted(found, reverse=True)[:3]]

    def table(self) -> str:
        width = max([len(o) for o in self.counts] + [7])
        lines = [f"{'outcome':<{width}}  {'count':>9}  {'share':>7}"]
        for outcome, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"{outcome:<{width}}  {n:>9}  {100 * n / max(self.total, 1):>6.2f}%")
        lines.append(f"{'total':<{width}}  {self.total:>9}  ({self.failures} failures)")
        return "\n".join(lines)

    def summary(self) -> dict:
        elapsed = time.monotonic() - self.started
        classes = {k: {**v, "triggers": self.triggers(k), "mutations": dict(v["mutations"].most_common()),
                       "seeds": dict(v["seeds"].most_common(5))} for k, v in self.classes.items()}
        return {
            "inputs": self.total, "failures": self.failures, "seconds": round(elapsed, 1),
            "inputs_per_second": round(self.total / max(elapsed, 1e-9), 1), "counts": dict(self.counts),
            "classes": classes,
            "slowest": [{"seconds": round(s, 3), "index": i, "mutations": m} for s, i, m in self.slowest],
        }


def _collect(make: Callable[[int], Sample], indices: Iterable[int], out: Path, pool: Pool, stats: Stats,
             save: Callable[[Result], str], on_result: Callable[[Result, Stats], None] | None,
             per_class: int | None = None) -> Stats:
    """Run ``indices`` through ``pool``: count every result, let ``save`` keep a failure's bytes
    and log it to ``out/failures.jsonl`` (without its message beyond ``per_class`` of a class)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "failures.jsonl", "a") as log:
        def report(a: Answer) -> None:
            v = a.verdict
            result = Result(a.index, v.outcome, v.stage, v.detail, v.where, a.seed, a.mutations, round(a.seconds, 4))
            if result.failed and not v.outcome.startswith("fuzzer:"):
                if not result.seed:
                    sample = make(a.index)
                    result.seed, result.mutations = sample.seed, sample.mutations
                result.path = save(result)
            if result.failed:
                seen = stats.classes.get(result.key(), {}).get("count", 0)
                row = asdict(result) if per_class is None or seen < per_class else \
                    {**asdict(result), "detail": "", "key": result.key()}
                log.write(json.dumps(row) + "\n")
                log.flush()
            stats.add(result)
            if on_result:
                on_result(result, stats)

        pool.run(indices, report)
    return stats


class Fuzzer:
    """Reproducible fuzz inputs (master seed, index) from seed files, run in a worker Pool."""

    def __init__(self, master_seed: int = 0, seed_files: Iterable[Path] | None = None) -> None:
        files = list(default_seed_files() if seed_files is None else seed_files)
        self.master_seed = master_seed
        self.pool: list[Seed] = load_seeds([(_seed_name(p), p.read_bytes()) for p in files])

    def sample(self, index: int) -> Sample:
        """Input number ``index`` of this master seed, the same on every run and machine."""
        return mutate(self.pool, random.Random(f"nnr-fuzz:{self.master_seed}:{index}"))

    def run(self, indices: Iterable[int], out: Path, workers: int = 1, timeout: float = DEFAULT_TIMEOUT,
            memory: int = DEFAULT_MEMORY, target: Target = check_decoder, per_class: int | None = None,
            on_result: Callable[[Result, Stats], None] | None = None, stats: Stats | None = None) -> Stats:
        """Run the inputs; each failure's bytes go to ``out`` as <outcome>-<seed>-<index>.nnr (at
        most ``per_class`` per failure class) and every failure is logged to ``out/failures.jsonl``."""
        stats = Stats() if stats is None else stats

        def save(result: Result) -> str:
            if per_class is not None and stats.classes.get(result.key(), {}).get("count", 0) >= per_class:
                return ""
            path = out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', result.outcome)}-{self.master_seed}-{result.index}.nnr"
            path.write_bytes(self.sample(result.index).data)
            return str(path)

        warm_up(next((s.data for s in self.pool if s.doc is not None), b""))
        pool = Pool(self.sample, target, workers, timeout, memory)
        return _collect(self.sample, indices, out, pool, stats, save, on_result, per_class)


def replay(files: list[Path], out: Path, workers: int = 1, timeout: float = DEFAULT_TIMEOUT,
           memory: int = DEFAULT_MEMORY, on_result: Callable[[Result, Stats], None] | None = None) -> Stats:
    """Check saved inputs (e.g. earlier reproducers) unmutated, with the spec rules each breaks."""
    def make(index: int) -> Sample:
        data = files[index].read_bytes()
        doc = parse(data)
        return Sample(data, str(files[index]), ["replay"], violations(doc) if doc else [])

    warm_up(next((p.read_bytes() for p in default_seed_files()), b""))
    pool = Pool(make, check_decoder, workers, timeout, memory)
    return _collect(make, range(len(files)), out, pool, Stats(), lambda r: r.seed, on_result)


def _seed_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"

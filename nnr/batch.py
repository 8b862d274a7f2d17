"""Encode or decode many models, one task per model, on a local process pool or on an existing
Dask cluster (``distributed``, the ``batch`` extra). No scheduler of our own: the pool and Dask
place the tasks; this module only plans them, runs one, and collects the per-model reports.

Each output is written atomically, so a task that fails or is killed leaves nothing behind
and a rerun skips exactly the outputs that exist. A failing model is reported and never
stops the others.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Iterable

from .errors import InputError, NnrError, OptionError

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclasses.dataclass(frozen=True)
class Task:
    """One model's job: what to read, what to write, and how (picklable, so it can travel)."""

    source: str
    output: str
    decode: bool = False
    options: dict | None = None
    """EncoderOptions.to_json(); None is the default encoder (the probe)."""
    probe: bool | None = None
    threads: int | None = None
    force: bool = False


def read_manifest(path: str | os.PathLike) -> list[str]:
    """The model paths listed in a manifest: one per line, ``#`` starts a comment, relative
    paths are relative to the manifest's folder. Returned absolute, as Dask workers need."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc})") from None
    sources = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            sources.append(str((path.parent / entry).resolve()))
    if not sources:
        raise InputError(f"{path}: the manifest lists no model (one path per line)")
    return sources


def plan(sources: Iterable[str], out_dir: str | os.PathLike, decode: bool = False, **task_fields) -> list[Task]:
    """One Task per source, writing ``out_dir/<stem>.nnr`` (or ``.onnx`` when decoding). Two
    sources with the same stem, or one listed twice, would write one file: refused."""
    out_dir = Path(out_dir).resolve()
    suffix = ".onnx" if decode else ".nnr"
    tasks, seen = [], {}
    for src in sources:
        output = out_dir / (Path(src).stem + suffix)
        if output in seen:
            raise OptionError(f"{src} and {seen[output]} would both write {output}; rename one of them")
        seen[output] = src
        tasks.append(Task(str(src), str(output), decode, **task_fields))
    return tasks


def run_task(task: Task) -> dict:
    """Do one task and report it; never raises for a bad model (the report says what failed)."""
    t0 = time.perf_counter()
    report = {"input": task.source, "output": task.output, "status": OK, "error": None,
              "input_bytes": _size(task.source), "output_bytes": None, "seconds": None,
              "worker": f"{os.uname().nodename}:{os.getpid()}"}
    if not task.force and os.path.exists(task.output):
        report.update(status=SKIPPED, output_bytes=_size(task.output))
        return report
    try:
        _do(task)
    except NnrError as exc:
        report.update(status=FAILED, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one model's bug must not stop the fleet
        report.update(status=FAILED, error=f"internal error, please report it: {type(exc).__name__}: {exc}")
    else:
        report["output_bytes"] = _size(task.output)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _do(task: Task) -> None:
    if not os.path.isfile(task.source):
        raise InputError(f"{task.source}: no such file")
    if task.decode:
        from .decoder import decode_to_file

        decode_to_file(task.source, task.output, threads=task.threads)
        return
    from .encoder import encode_to_file
    from .options import EncoderOptions

    options = EncoderOptions.from_json(task.options) if task.options is not None else None
    encode_to_file(task.source, task.output, options, probe=task.probe, threads=task.threads)


def _size(path: str) -> int | None:
    """A file's bytes; an ONNX model's include its external data. None if it can't be read."""
    try:
        if path.endswith(".onnx"):
            from nnr.formats.onnx_io import model_bytes_on_disk

            return model_bytes_on_disk(path)
        return os.path.getsize(path)
    except (OSError, NnrError):
        return None


def run(tasks: list[Task], workers: int | None = None, scheduler: str | None = None,
        on_report: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """Run the tasks and return their reports in the tasks' order. Locally on ``workers``
    processes (default: one per core, at most one per task), or on the Dask cluster whose
    scheduler is at ``scheduler`` (e.g. ``tcp://host:8786``). ``on_report(done, total, report)``
    is called as each task finishes."""
    if not tasks:
        return []
    if scheduler is not None:
        reports = _on_dask(tasks, scheduler, on_report)
    else:
        reports = _on_pool(tasks, workers, on_report)
    return [reports[i] for i in range(len(tasks))]


def _on_pool(tasks: list[Task], workers: int | None, on_report) -> dict[int, dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from .threads import available_cores

    if workers is not None and workers < 1:
        raise OptionError(f"workers must be at least 1, not {workers}")
    workers = min(workers or available_cores(), len(tasks))
    share = max(1, available_cores() // workers)
    tasks = [t if t.threads is not None else dataclasses.replace(t, threads=share) for t in tasks]
    reports: dict[int, dict] = {}
    # spawn: a fresh interpreter per worker, never a fork of a process holding threads
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_task, t): i for i, t in enumerate(tasks)}
        for fut in as_completed(futures):
            i = futures[fut]
            reports[i] = _collected(fut, tasks[i])
            if on_report:
                on_report(len(reports), len(tasks), reports[i])
    return reports


def _on_dask(tasks: list[Task], scheduler: str, on_report) -> dict[int, dict]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise OptionError("--scheduler needs Dask's distributed package: pip install 'nnr[batch]'") from None
    try:
        client = Client(scheduler, timeout=30, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    # one core per task unless told otherwise: Dask already runs a task on each worker thread
    tasks = [t if t.threads is not None else dataclasses.replace(t, threads=1) for t in tasks]
    reports: dict[int, dict] = {}
    with client:
        futures = client.map(run_task, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures, loop=client.loop):
            i = index[fut.key]
            reports[i] = _collected(fut, tasks[i])
            if on_report:
                on_report(len(reports), len(tasks), reports[i])
    return reports


def _collected(future, task: Task) -> dict:
    """A finished future's report; a worker that died (killed, out of memory) fails its task only."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - the pool or cluster lost the worker
        return {"input": task.source, "output": task.output, "status": FAILED,
                "error": f"the worker running it died: {type(exc).__name__}: {exc}", "input_bytes": _size(task.source),
                "output_bytes": None, "seconds": None, "worker": None}


def summary(reports: list[dict]) -> dict:
    """Counts by status and byte totals over the tasks that ran."""
    done = [r for r in reports if r["status"] == OK]
    return {"tasks": len(reports), **{s: sum(r["status"] == s for r in reports) for s in (OK, SKIPPED, FAILED)},
            "input_bytes": sum(r["input_bytes"] or 0 for r in done),
            "output_bytes": sum(r["output_bytes"] or 0 for r in done)}

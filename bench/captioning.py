"""Benchmark stage 7 against the Ollama stand-in with a fixed per-request latency.

Runs stages 6–7 as the flow runs them (resize chunks, then caption chunks
submitted together and gated by the global concurrency limit ``ollama``) in a
private Prefect test server and a throw-away GALLERYFLOW_HOME, and reports:

- requests in flight at the stand-in (sampled every 5 ms; max and mean while busy),
- rows per second, against the ideal ``slots / latency``,
- with one pathologically slow row: when the other chunks finished and when an
  unrelated stage-6 job submitted alongside finished, compared with the slow row.

    python bench/captioning.py [--rows 48] [--latency 0.1] [--slow 3.0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HOME = Path(tempfile.mkdtemp(prefix="gf-bench-captioning-"))
os.environ["GALLERYFLOW_HOME"] = str(HOME / "home")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

import galleryflow  # noqa: E402,F401  (Prefect env defaults before prefect is imported)
from prefect import flow  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from galleryflow.db.engine import migrate  # noqa: E402
from galleryflow.core.settings import get_settings  # noqa: E402
from tasks.captioning import caption_chunk, start_captioning  # noqa: E402
from galleryflow.core.stages import chunked  # noqa: E402
from tasks.model_resize import model_resize_chunk, resize_rows  # noqa: E402
from galleryflow.intake.samples import insert_set  # noqa: E402
from _ollama_stub import PRIMARY, Good, OllamaStub, Slow, point_at  # noqa: E402  (bench/)


class InFlightSampler:
    """Samples the stand-in's in-flight count while the stage runs."""

    def __init__(self, stub: OllamaStub, interval: float = 0.005) -> None:
        self.stub, self.interval = stub, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.stub.in_flight)
            time.sleep(self.interval)

    def __enter__(self) -> "InFlightSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def busy_mean(self) -> float:
        busy = [s for s in self.samples if s]
        return sum(busy) / len(busy) if busy else 0.0


@dataclass
class Result:
    name: str
    rows: int
    slots: int
    chunk_size: int
    seconds: float
    max_in_flight: int
    mean_in_flight: float
    ideal_rows_per_second: float
    requests: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds


@flow(name="bench-captioning")
def stages(row_ids: list[int], image_set_id: int, chunk_size: int,
           side_ids: list[int] | None = None, side_session: int | None = None) -> dict[str, float]:
    started = time.monotonic()
    finished: dict[str, float] = {}
    resized = [model_resize_chunk.submit(c, image_set_id) for c in chunked(row_ids, 64)]
    plan = start_captioning(image_set_id)
    captions = [caption_chunk.submit(c, image_set_id, plan, wait_for=resized)
                for c in chunked(row_ids, chunk_size)]
    # Other work of the same run (another set's stage 6) submitted after the captioning.
    side = model_resize_chunk.submit(side_ids, side_session) if side_ids else None
    names = {future.task_run_id: f"chunk {i + 1}" for i, future in enumerate(captions)}
    for future in as_completed(captions):
        future.result()
        finished[names[future.task_run_id]] = time.monotonic() - started
    if side is not None:
        side.result()
        finished["side"] = side_done["t"] - started
    return finished


side_done: dict[str, float] = {}


def scenario(name: str, rows: int, slots: int, chunk_size: int, latency: float,
             slow_row_seconds: float | None = None) -> tuple[Result, dict[str, float]]:
    settings = get_settings()
    with OllamaStub(models=(PRIMARY,)) as stub:  # fresh digest: no cache hits between runs
        point_at(settings, stub)
        settings.ollama.timeout_seconds = 30.0
        with get_client(sync_client=True) as client:
            client.upsert_global_concurrency_limit_by_name("ollama", slots)
        inserted = insert_set(settings, HOME / "sets", f"{name}-set", rows, size=(640, 480))
        slow_stamp = None
        if slow_row_seconds:
            slow_stamp = "09:00"  # the first photo of the set
            stub.default = lambda call: Slow(slow_row_seconds if call.evidence.get(
                "date_taken", "").endswith(slow_stamp) else latency, Good())
        else:
            stub.default = Slow(latency, Good())
        side = None
        if slow_row_seconds:
            side = insert_set(settings, HOME / "sets", f"{name}-side", 16, size=(1600, 1200))
            original = resize_rows

            def timed(*args, **kwargs):  # when the unrelated stage-6 work actually finished
                report = original(*args, **kwargs)
                side_done["t"] = time.monotonic()
                return report
            import tasks.model_resize as mr

            mr.resize_rows = timed  # the task body looks the function up at call time
        try:
            with InFlightSampler(stub) as sampler:
                started = time.monotonic()
                finished = stages(inserted.row_ids, inserted.image_set_id, chunk_size,
                                  side.row_ids if side else None,
                                  side.image_set_id if side else None)
                seconds = time.monotonic() - started
        finally:
            if side is not None:
                import tasks.model_resize as mr

                mr.resize_rows = original
        result = Result(name=name, rows=rows, slots=slots, chunk_size=chunk_size, seconds=seconds,
                        max_in_flight=stub.max_in_flight, mean_in_flight=sampler.busy_mean,
                        ideal_rows_per_second=slots / latency, requests=len(stub.calls))
        return result, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per model request")
    parser.add_argument("--slow", type=float, default=3.0, help="seconds for the one slow row")
    args = parser.parse_args()
    settings = get_settings()
    settings.ensure_dirs()
    migrate(settings.db_url)
    results = []
    with prefect_test_harness(server_startup_timeout=180):
        for name, slots, chunk in (("limit1-chunk16", 1, 16), ("limit2-chunk16", 2, 16),
                                   ("limit1-chunk1", 1, 1)):
            rows = args.rows if chunk > 1 else max(4, args.rows // 6)
            result, _ = scenario(name, rows, slots, chunk, args.latency)
            results.append(result)
        slow, finished = scenario("limit2-slowrow", args.rows, 2, 16, args.latency,
                                  slow_row_seconds=args.slow)
        results.append(slow)
    print(f"\nStage 7 against the stand-in, {args.latency * 1000:.0f} ms per request "
          f"(machine: {os.cpu_count()} cores)\n")
    print(f"{'scenario':<16} {'rows':>5} {'slots':>5} {'chunk':>5} {'seconds':>8} "
          f"{'rows/s':>7} {'ideal':>6} {'requests':>8} {'max in flight':>13} {'mean in flight':>14}")
    for r in results:
        print(f"{r.name:<16} {r.rows:>5} {r.slots:>5} {r.chunk_size:>5} {r.seconds:>8.2f} "
              f"{r.rows_per_second:>7.2f} {r.ideal_rows_per_second:>6.1f} {r.requests:>8} {r.max_in_flight:>13} "
              f"{r.mean_in_flight:>14.2f}")
    print(f"\nOne row takes {args.slow:.1f} s (limit 2, chunks of 16): when each part finished")
    for key, value in finished.items():
        print(f"  {key:<10} {value:6.2f} s")
    print("  (chunk 1 holds the slow row; 'side' is another set's stage-6 chunk)")


if __name__ == "__main__":
    main()

"""The Spark engine's costs, measured in one run beside the embedded engine.

- backfill: `run --once` over the same history, embedded then Spark (local[2]); the ratio.
- session start: Spark `--once` over a tiny history (one micro-batch).
- per micro-batch: the same tiny history cut into many micro-batches (``--txn-bytes``),
  (wall - session start) / micro-batches.

``--src PATH`` runs another checkout's ``src`` (e.g. the code before a change) through
PYTHONPATH, for before/after figures on the same data. Answers are compared with the
embedded engine's.

    .venv/bin/python bench/spark_costs.py --lines 1000000 [--src /tmp/before/src]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from backfill import engine_run
from cohortflow.warehouse import open_warehouse
from common import Sizes, compare, generate, served, warehouse_answer


def _cold(scratch: Path, name: str) -> Path:
    """A warehouse path with nothing left from an earlier run (nor its checkpoint)."""
    for leftover in scratch.glob(f"{name}.db*"):
        leftover.unlink()
    shutil.rmtree(scratch / f"{name}-checkpoint", ignore_errors=True)
    return scratch / f"{name}.db"


def _spark(data: Path, url: str, scratch: Path, name: str, env: dict[str, str], *extra: str) -> float:
    warehouse, checkpoint = _cold(scratch, name), scratch / f"{name}-checkpoint"
    spark = ("--engine", "spark", "--spark-master", "local[2]", "--checkpoint", str(checkpoint), *extra)
    return engine_run(data, url, str(warehouse), *spark, env=env).wall_s


def _micro_batches(warehouse: Path) -> int:
    with open_warehouse(str(warehouse)) as wh:
        state = wh.state()
    return 1 + max((v for k, v in state.items() if k.startswith("spark:")), default=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--students", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--src", type=Path, help="run this checkout's src (PYTHONPATH)")
    parser.add_argument("--scratch", type=Path, help="keep data here (reused when present)")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.src.resolve())} if args.src else {}
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="spark-costs-"))
    out: dict[str, float] = {}
    big, tiny = scratch / "big", scratch / "tiny"
    if not big.exists():
        generate(big, Sizes(args.lines, args.students, args.batches))
    if not tiny.exists():
        generate(tiny, Sizes(20_000, 1_000, 50))
    with served(big) as sim:
        url = f"{sim.url}/batches"
        out["embedded_s"] = engine_run(big, url, str(_cold(scratch, "embedded")), env=env).wall_s
        out["spark_s"] = _spark(big, url, scratch, "spark", env)
        compare(
            "spark",
            warehouse_answer(str(scratch / "spark.db")),
            warehouse_answer(str(scratch / "embedded.db")),
        )
    out["ratio"] = out["spark_s"] / out["embedded_s"]
    with served(tiny) as sim:
        url = f"{sim.url}/batches"
        out["session_start_s"] = _spark(tiny, url, scratch, "tiny-one", env)
        many = _spark(tiny, url, scratch, "tiny-many", env, "--txn-bytes", "65536")
        batches = _micro_batches(scratch / "tiny-many.db")
    out["micro_batches"] = batches
    out["per_micro_batch_s"] = (many - out["session_start_s"]) / max(1, batches - 1)
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))


if __name__ == "__main__":
    main()

"""Draw ``results/polling.png``: reads per task and p95 lag, kling_async against baselines.

    python -m benchmarks.chart        (needs the ``bench`` extra: matplotlib)
"""

from __future__ import annotations

import json

from ._harness import RESULTS


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads((RESULTS / "polling.json").read_text())
    rows = data["rows"]
    names = [r["variant"] for r in rows]
    figure, (reads, lag) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = ["#999999" if n.startswith("(") else "#2b7bba" for n in names]
    reads.barh(names, [r["reads_per_task"] for r in rows], color=colors)
    reads.set_xlabel("status requests per task (fewer is better)")
    reads.invert_yaxis()
    lag.barh(names, [r["lag_p95_s"] for r in rows], color=colors)
    lag.set_xlabel("completion-detection lag p95, API seconds (lower is better)")
    lag.invert_yaxis()
    lag.set_yticks([])
    figure.suptitle(f"{rows[0]['tasks']} tasks, estimated_time 300 s: {data['command']}")
    figure.tight_layout()
    out = RESULTS / "polling.png"
    figure.savefig(out, dpi=110)
    print("saved", out)


if __name__ == "__main__":
    main()

"""Where a search step and a training step spend their time: torch.profiler's top kernels and the
host vs device totals, for the plain and the bf16/channels_last paths (no compile).

    python benchmarks/profile_step.py > benchmarks/results/profile-<device>.txt
"""

from __future__ import annotations

import sys

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from throughput import search_step, train_step  # noqa: E402

from lhdbench import engine  # noqa: E402
from lhdbench.protocol import SpeedSettings  # noqa: E402


def main() -> None:
    device = engine.pick_device()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for label, speed in (("plain", SpeedSettings()),
                         ("bf16+channels_last", SpeedSettings(precision="bf16", channels_last=True))):
        for part, run, batch in (("search", search_step, 176), ("train", train_step, 64)):
            run(speed, device, batch, 3, 2)  # warm up cudnn autotuning outside the trace
            with profile(activities=activities) as trace:
                run(speed, device, batch, 0, 3)
            print(f"===== {part} / {label} (3 steps) =====")
            events = trace.key_averages()
            sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            print(events.table(sort_by=sort, row_limit=18, max_name_column_width=60))
            sys.stdout.flush()


if __name__ == "__main__":
    main()

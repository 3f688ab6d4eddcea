"""What a GPU process holds, as the benchmarks record it beside every measurement: PyTorch's peak of
allocated memory (which misses a CUDA graph's private pool once the graph is captured: replays
allocate nothing), its peak of reserved memory (pools included), and the driver's figure for the whole
process (the CUDA context and cuDNN's handles too), which is what packing trials on one GPU must fit.

    from gpu_memory import memory_figures   # with benchmarks/ on sys.path
"""

from __future__ import annotations

import os
import subprocess

MIB = 1 << 20


def driver_process_bytes(pid: int | None = None) -> int | None:
    """The driver's used memory of process `pid` (default: this one) from nvidia-smi, or None where it
    cannot say (no nvidia-smi, or a container whose process ids the driver does not see)."""
    pid = os.getpid() if pid is None else pid
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            return int(parts[1]) * MIB
    return None


def memory_figures(device) -> dict[str, int | None]:
    """PyTorch's peaks since the last reset_peak_memory_stats, the memory reserved now, the driver's
    figure for this process, and the device's used memory (all processes); None on a CPU."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return dict.fromkeys(("peak_allocated_bytes", "peak_reserved_bytes", "reserved_bytes",
                              "driver_process_bytes", "device_used_bytes"))
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(device),
            "reserved_bytes": torch.cuda.memory_reserved(device),
            "driver_process_bytes": driver_process_bytes(),
            "device_used_bytes": total - free}

"""Checks before a benchmark writes anything or starts Ray: every dataset of the plan can be had, and
the protocol fits the machine. Each failure is one line (ValueError, exit status 2), within seconds."""

from __future__ import annotations

from .plan import Plan

# A protocol whose trials take longer than this on a measured GPU is refused on a machine without a
# GPU unless the user insists: on a CPU it would run for weeks.
GPU_SIZED_SECONDS = 3600.0


def datasets_of(plan: Plan) -> list[str]:
    return list(dict.fromkeys(t.dataset for t in plan.trials))


def check_datasets(plan: Plan, data_root: str | None) -> None:
    """Every dataset the plan trains or evaluates on is on disk under the data root, or can be
    downloaded from here."""
    problems = missing_datasets(plan, data_root, first_only=True)
    if problems:
        raise ValueError(problems[0])


def missing_datasets(plan: Plan, data_root: str | None, first_only: bool = False) -> list[str]:
    """One line per dataset of the plan that is neither on disk under the data root nor downloadable
    from here. Every dataset is looked for on disk before any download host is tried."""
    from .data import check_available

    datasets = datasets_of(plan)
    on_disk = {d for d in datasets if check_available(d, data_root, download=False) is None}
    problems = []
    for dataset in datasets:
        problem = None if dataset in on_disk else check_available(dataset, data_root)
        if problem:
            problems.append(problem)
            if first_only:
                break
    return problems


def check_fits_datasets(plan: Plan) -> None:
    """Refuse a protocol with an auxiliary head on images too small for it (the head reads the maps
    after the second reduction, which it needs at 8x8 or larger)."""
    from .data.specs import DATASETS
    from .space.layout import auxiliary_head_fits

    if plan.protocol.evaluate.auxiliary_weight <= 0:
        return
    evaluated = dict.fromkeys(t.dataset for t in plan.trials if t.phase == "evaluate")
    small = [d for d in evaluated if not auxiliary_head_fits(DATASETS[d].image_size)]
    if small:
        sizes = ", ".join(f"{d} ({DATASETS[d].image_size}x{DATASETS[d].image_size})" for d in small)
        raise ValueError(f"protocol {plan.protocol.name} trains an auxiliary head, which needs images of "
                         f"32x32 or larger, and {sizes} is smaller; use a protocol with "
                         "evaluate.auxiliary_weight: 0 for it (the demo preset has none)")


def check_fits_device(plan: Plan, has_gpu: bool) -> None:
    """Refuse a GPU-sized protocol (paper, fast) where no GPU is visible."""
    if has_gpu:
        return
    from .estimate import estimate, hours_text

    result = estimate(plan, kind="gpu")
    longest = max((c.seconds or 0.0 for c in result.costs), default=0.0)
    if longest > GPU_SIZED_SECONDS:
        raise ValueError(f"protocol {plan.protocol.name} is sized for GPUs (its longest trial takes about "
                         f"{hours_text(longest)} on {result.device}) and this machine has none; use a small "
                         "preset (--preset demo or smoke), run on a GPU machine or a cluster (--address), "
                         "or pass --allow-cpu to run it on the CPU anyway")

"""The evaluation training step in its variants, measured in one run on one device: the paper's base
network (20 cells, C=36, auxiliary head, drop path on), batch 64, inputs from the GPU-resident stream,
each variant through lhdbench.train_step.TrainStep as the evaluation loop runs it.

  * plain: fp32, eager (what the paper preset runs);
  * graphed-fp32: speed.cuda_graphs (fused SGD, device learning rate, foreach clipping, CUDA graphs);
  * graphed-bf16: the same under bf16 autocast;
  * compiled: torch.compile(mode="reduce-overhead") of the network (forward and, through AOTAutograd,
    backward: Inductor's kernels, replayed from CUDA graphs by PyTorch's cudagraph trees), the loss,
    gradient clipping and SGD step eager as in `plain`: PyTorch's own way to what graphed-fp32 does by
    hand. Its first step includes the compilation, recorded as `first_step_s`;
  * compiled-cudagraphs: torch.compile(backend="cudagraphs"): the same cudagraph trees around the
    network's own ATen kernels, without Inductor's code generation (which took over four minutes for
    this network in an earlier run, docs/speed.md), so it compiles in far less time.

On a CPU every variant runs eagerly (no graphs, no compilation, no bf16): the compiled ones are then
the plain step exactly and the graphed ones its graph-ready form (tests/test_benchmark_variants.py).

The plain variant is measured and written first. Before the first graphed variant, the graphed fp32
step is checked against the plain one: both from the same weights on the same batches (drop path off,
so no random draws differ), fp32, 30 steps with the learning rate changing every 10 and a smaller last
batch (which runs eagerly between replays); the largest relative difference of the losses and of the
final weights is recorded (cuDNN's own run-to-run noise included). A variant that fails is recorded
under `errors` and the others still run. Memory: PyTorch's peaks of allocated and of reserved memory
(a graph's pool shows only in the latter) and the driver's figure for the process, per variant.

    python benchmarks/train_step.py --out benchmarks/results/gpu-train-step.json
    python benchmarks/train_step.py --out gpu-compiled.json --variants compiled-cudagraphs,compiled
    python benchmarks/train_step.py --out /tmp/x.json --rehearse      # tiny, on the CPU
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path

import torch

from lhdbench import engine
from lhdbench.environment import environment
from lhdbench.protocol import SpeedSettings
from lhdbench.space import FinalNetwork, discretize, get_policy
from lhdbench.train_step import TrainStep, make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_memory import memory_figures  # noqa: E402
from result_file import ResultFile  # noqa: E402
from sizes import PAPER, REHEARSAL, Size  # noqa: E402
from throughput import EVAL_STEPS_PER_EPOCH, fixed_arch_weights, stream, sync  # noqa: E402

VARIANTS = {"plain": SpeedSettings(),
            "graphed-fp32": SpeedSettings(cuda_graphs=True),
            "graphed-bf16": SpeedSettings(precision="bf16", cuda_graphs=True),
            "compiled": SpeedSettings(),
            "compiled-cudagraphs": SpeedSettings()}


def network(device: torch.device, size: Size = PAPER, policy: str = "base") -> FinalNetwork:
    torch.manual_seed(0)
    genotype = discretize(fixed_arch_weights(), get_policy(policy))
    return FinalNetwork(genotype, 10, size.channels, size.layers).to(device).train()


class CompiledStep(TrainStep):
    """The step with a network compiled by torch.compile(mode="reduce-overhead"): each step tells the
    cudagraph trees that a new iteration begins, as PyTorch asks for training loops."""

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.compiler.cudagraph_mark_step_begin()
        return super().step(x, y)


def make_step(model: FinalNetwork, variant: str, device: torch.device) -> tuple[TrainStep, object]:
    speed = VARIANTS[variant]
    optimizer = make_optimizer(model, 0.025, 0.9, 3e-4, speed.cuda_graphs, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 3, eta_min=0.0)
    args = (optimizer, 0.4, 5.0, engine.autocast(speed, device))
    if variant == "compiled" and device.type == "cuda":
        return CompiledStep(model, torch.compile(model, mode="reduce-overhead"), *args), scheduler
    if variant == "compiled-cudagraphs" and device.type == "cuda":
        return CompiledStep(model, torch.compile(model, backend="cudagraphs"), *args), scheduler
    return TrainStep(model, model, *args, graphs=speed.cuda_graphs), scheduler


def equality(device: torch.device, size: Size = PAPER) -> dict:
    """The graphed fp32 step against the plain one on the same inputs."""
    steps = size.equality_steps
    base = network(device, size)
    models = {"plain": base, "graphed": copy.deepcopy(base)}
    g = torch.Generator(device="cpu").manual_seed(1)
    sizes = [size.batch] * (steps - 1) + [max(1, size.batch * 5 // 8)]
    batches = [(torch.randint(0, 256, (b, 3, 32, 32), generator=g).to(device).float().div(255),
                torch.randint(0, 10, (b,), generator=g).to(device)) for b in sizes]
    losses = {}
    for name, model in models.items():
        step, scheduler = make_step(model, "graphed-fp32" if name == "graphed" else "plain", device)
        model.drop_path_prob = 0.0
        losses[name] = []
        for i, (x, y) in enumerate(batches):
            loss, _ = step.step(x, y)
            losses[name].append(float(loss))
            if i % 10 == 9:
                scheduler.step()
    loss_diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses["plain"], losses["graphed"],
                                                                     strict=True))

    @torch.no_grad()
    def squared_distance(a, b) -> float:
        pairs = zip(a.parameters(), b.parameters(), strict=True)
        return sum(float((p - q).double().norm() ** 2) for p, q in pairs)

    num = squared_distance(models["plain"], models["graphed"])
    with torch.no_grad():
        den = sum(float(p.double().norm() ** 2) for p in models["plain"].parameters())
    moved = squared_distance(network(device, size), models["plain"])
    return {"steps": steps, "max_rel_loss_diff": loss_diff, "weights_rel_diff": (num / den) ** 0.5,
            "weights_rel_moved": (moved / den) ** 0.5, "losses_plain": losses["plain"][-3:],
            "losses_graphed": losses["graphed"][-3:]}


def fresh(device: torch.device) -> None:
    """Memory of an earlier variant handed back, so this one's peaks are its own."""
    torch._dynamo.reset()  # an earlier compiled variant's graphs and caches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed(variant: str, device: torch.device, size: Size = PAPER, mark=None) -> dict:
    fresh(device)
    model = network(device, size)
    step, _ = make_step(model, variant, device)
    model.drop_path_prob = 0.2 * 0.01 * len(model.genotype.normal.concat)
    data = stream(size.images, size.batch, device, False, 16)
    began = time.perf_counter()
    step.step(*data.next_batch())
    sync(device)
    first = time.perf_counter() - began
    if mark is not None:
        mark(first)
    for _ in range(size.warmup - 1):
        step.step(*data.next_batch())
    sync(device)
    warmup = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(size.steps):
        loss, _ = step.step(*data.next_batch())
    sync(device)
    seconds = (time.perf_counter() - began) / size.steps
    return {"first_step_s": first, "warmup_s": warmup, "step_s": seconds,
            "images_per_s": size.batch / seconds, "final_loss": float(loss),
            "train_600_epochs_h": 600 * EVAL_STEPS_PER_EPOCH * seconds * 64 / size.batch / 3600,
            "memory": memory_figures(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="plain,graphed-fp32,graphed-bf16",
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--rehearse", action="store_true", help="a tiny network on the CPU")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    size = REHEARSAL if args.rehearse else PAPER
    size = Size(**{**size.__dict__, **{k: v for k, v in (("steps", args.steps), ("warmup", args.warmup))
                                       if v is not None}})
    if args.rehearse:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        device = engine.pick_device(None)
        if device.type != "cuda":
            sys.exit("benchmarks/train_step.py measures CUDA graphs: it needs a GPU (--rehearse runs it on "
                     "the CPU)")
        torch.backends.cudnn.benchmark = True
    out = ResultFile(args.out, rehearsal=args.rehearse, device=environment(device).model_dump(),
                     batch=size.batch, network={"channels": size.channels, "layers": size.layers},
                     timed_steps=size.steps, warmup_steps=size.warmup, variants={}, speedup={})
    result = out.data
    for name in names:
        if name != "plain" and VARIANTS[name].cuda_graphs and "equality_fp32" not in result:
            result["equality_fp32"] = None
            result["equality_fp32"] = out.measure("equality_fp32", lambda: equality(device, size))
            print("equality", json.dumps(result["equality_fp32"]), file=sys.stderr, flush=True)
        # Marked before it starts: a variant killed while compiling shows as such.
        result["variants"][name] = {"status": "started", "first_step_s": None}
        out.save()

        def first_step_done(seconds: float, name: str = name) -> None:
            result["variants"][name] = {"status": "first step done", "first_step_s": seconds}
            out.save()

        measured = out.measure(name, lambda name=name: timed(name, device, size, first_step_done))
        if measured is None:
            result["variants"][name]["status"] = "failed"
        else:
            result["variants"][name] = {"status": "done", **measured}
            print(name, json.dumps(measured), file=sys.stderr, flush=True)
        plain = result["variants"].get("plain", {}).get("step_s")
        if plain:
            result["speedup"] = {k: plain / v["step_s"] for k, v in result["variants"].items()
                                 if v.get("step_s")}
        out.save()
    out.done()
    print(json.dumps(result["speedup"]))


if __name__ == "__main__":
    main()

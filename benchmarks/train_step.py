"""The evaluation training step, plain against graphed, measured in one run on one device: the paper's
base network (20 cells, C=36, auxiliary head, drop path on), batch 64, inputs from the GPU-resident
stream, each variant through lhdbench.train_step.TrainStep as the evaluation loop runs it.

  * plain: fp32, eager (what the paper preset runs);
  * graphed-fp32: speed.cuda_graphs (fused SGD, device learning rate, foreach clipping, CUDA graphs);
  * graphed-bf16: the same under bf16 autocast.

Before timing, it checks that the graphed step computes the plain one: both from the same weights on
the same batches (drop path off, so no random draws differ), fp32, 30 steps with the learning rate
changing every 10 and a smaller last batch, and records the largest relative difference of the losses
and of the final weights (cuDNN's own run-to-run noise included).

    python benchmarks/train_step.py --out benchmarks/results/gpu-train-step.json
"""

from __future__ import annotations

import argparse
import copy
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
from throughput import EVAL_STEPS_PER_EPOCH, fixed_arch_weights, stream, sync  # noqa: E402

VARIANTS = {"plain": SpeedSettings(),
            "graphed-fp32": SpeedSettings(cuda_graphs=True),
            "graphed-bf16": SpeedSettings(precision="bf16", cuda_graphs=True)}


def network(device: torch.device) -> FinalNetwork:
    torch.manual_seed(0)
    genotype = discretize(fixed_arch_weights(), get_policy("base"))
    return FinalNetwork(genotype, 10, 36, 20).to(device).train()


def make_step(model: FinalNetwork, speed: SpeedSettings, device: torch.device) -> tuple[TrainStep, object]:
    optimizer = make_optimizer(model, 0.025, 0.9, 3e-4, speed.cuda_graphs, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 3, eta_min=0.0)
    step = TrainStep(model, model, optimizer, 0.4, 5.0, engine.autocast(speed, device),
                     graphs=speed.cuda_graphs)
    return step, scheduler


def equality(device: torch.device, steps: int = 30) -> dict:
    """The graphed fp32 step against the plain one on the same inputs."""
    base = network(device)
    models = {"plain": base, "graphed": copy.deepcopy(base)}
    g = torch.Generator(device="cpu").manual_seed(1)
    batches = [(torch.randint(0, 256, (64 if i < steps - 1 else 40, 3, 32, 32), generator=g)
                .to(device).float().div(255), torch.randint(0, 10, (64 if i < steps - 1 else 40,),
                                                            generator=g).to(device)) for i in range(steps)]
    losses = {}
    for name, model in models.items():
        step, scheduler = make_step(model, SpeedSettings(cuda_graphs=name == "graphed"), device)
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
    den = sum(float(p.double().norm() ** 2) for p in models["plain"].parameters())
    moved = squared_distance(network(device), models["plain"])
    return {"steps": steps, "max_rel_loss_diff": loss_diff, "weights_rel_diff": (num / den) ** 0.5,
            "weights_rel_moved": (moved / den) ** 0.5, "losses_plain": losses["plain"][-3:],
            "losses_graphed": losses["graphed"][-3:]}


def timed(speed: SpeedSettings, device: torch.device, warmup: int, steps: int) -> dict:
    model = network(device)
    step, _ = make_step(model, speed, device)
    model.drop_path_prob = 0.2 * 0.01 * len(model.genotype.normal.concat)
    data = stream(50_000, 64, device, False, 16)
    for _ in range(warmup):
        step.step(*data.next_batch())
    sync(device)
    torch.cuda.reset_peak_memory_stats(device) if device.type == "cuda" else None
    began = time.perf_counter()
    for _ in range(steps):
        loss, _ = step.step(*data.next_batch())
    sync(device)
    seconds = (time.perf_counter() - began) / steps
    return {"step_s": seconds, "images_per_s": 64 / seconds, "final_loss": float(loss),
            "train_600_epochs_h": 600 * EVAL_STEPS_PER_EPOCH * seconds / 3600,
            "peak_memory_bytes": engine.peak_memory_bytes(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=15)
    args = parser.parse_args()
    device = engine.pick_device(None)
    if device.type != "cuda":
        sys.exit("benchmarks/train_step.py measures CUDA graphs: it needs a GPU")
    torch.backends.cudnn.benchmark = True
    result: dict = {"device": environment(device).model_dump(), "batch": 64, "timed_steps": args.steps,
                    "equality_fp32": equality(device), "variants": {}}
    print(json.dumps(result["equality_fp32"]), file=sys.stderr, flush=True)
    for name, speed in VARIANTS.items():
        result["variants"][name] = timed(speed, device, args.warmup, args.steps)
        print(name, json.dumps(result["variants"][name]), file=sys.stderr, flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    plain = result["variants"]["plain"]["step_s"]
    result["speedup"] = {k: plain / v["step_s"] for k, v in result["variants"].items()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["speedup"]))


if __name__ == "__main__":
    main()

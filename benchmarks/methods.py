"""Per-method search cost: step time, estimated CIFAR-10 epoch time and peak GPU memory of every
registered baseline at its own paper settings (method defaults on top of the paper protocol).

The runner uses the peak memory to decide how many trials share a GPU. Inputs are synthetic uint8
images the size of CIFAR-10's splits, served by the GPU-resident stream.

    python benchmarks/methods.py --out benchmarks/results/methods-<device>.json [--methods darts,gdas]
    python benchmarks/methods.py --out /tmp/x.json --rehearse     # the smoke protocol's tiny supernets

On a CPU it runs a few steps at a small batch and scales the epoch estimate to the paper batch. A
method that fails is recorded under `errors` and the next one runs; the file is written at the start
and after every method.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from lhdbench import engine
from lhdbench.data.specs import train_images
from lhdbench.environment import environment
from lhdbench.methods import SearchContext, get_method, method_names, resolve_settings
from lhdbench.protocol import load_protocol
from lhdbench.search import _MethodForward

sys.path.insert(0, str(Path(__file__).resolve().parent))
from result_file import ResultFile  # noqa: E402
from throughput import stream, sync, timed  # noqa: E402

CIFAR10_TRAIN = train_images("cifar10")


def measure(name: str, device: torch.device, steps: int, warmup: int, cpu_batch: int | None,
            protocol_name: str = "paper", images: int = CIFAR10_TRAIN) -> dict:
    cls = get_method(name)
    protocol = load_protocol(protocol_name)
    settings, hparams = resolve_settings(cls, protocol)
    if not cls.trains:
        return {"trains": False, "note": "no training: exports its initial weights"}
    paper_batch = settings.batch_size
    batch = min(paper_batch, cpu_batch) if cpu_batch else paper_batch
    torch.manual_seed(0)
    method = cls(settings, hparams)
    net = engine.prepare_model(method.build_supernet(10), protocol.speed, device)
    method.supernet = net  # as the search loop sets it (EDD-DARTS measures its entropy from it)
    weight_opt, arch_opt = method.configure_optimizers(net)
    forward = engine.maybe_compile(_MethodForward(method, net), protocol.speed, cls.static_graph)
    ctx = SearchContext(net, forward, weight_opt, arch_opt, settings, engine.autocast(protocol.speed, device))
    weight_images = CIFAR10_TRAIN // 2 if cls.bilevel else CIFAR10_TRAIN
    streamed = images // 2 if cls.bilevel else images
    weights = stream(streamed, batch, device, protocol.speed.channels_last, 0)
    arch = stream(images // 2, batch, device, False, 0) if cls.bilevel else None
    # Measure the phase after any warm-up (PC-DARTS trains weights only for its first epochs).
    method.on_epoch_start(settings.epochs - 1)
    net.train()
    result = timed(lambda: method.step(ctx, weights.next_batch(), arch.next_batch() if arch else None),
                   warmup, steps, device)
    steps_per_epoch = math.ceil(weight_images / paper_batch)
    result.update(batch_measured=batch, batch_paper=paper_batch, bilevel=cls.bilevel,
                  steps_per_epoch_cifar10=steps_per_epoch,
                  epoch_s_cifar10=steps_per_epoch * result["step_s"] * paper_batch / batch,
                  search_min_cifar10=settings.epochs * steps_per_epoch * result["step_s"]
                  * paper_batch / batch / 60)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every registered one)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rehearse", action="store_true",
                        help="the smoke protocol's supernets, batch 4, on the CPU (benchmarks/gpu.sh)")
    args = parser.parse_args()
    device = torch.device("cpu") if args.rehearse else engine.pick_device(args.device)
    gpu = device.type == "cuda"
    if args.rehearse:
        torch.set_num_threads(1)
    steps, warmup = args.steps or (10 if gpu else 1), 3 if gpu else 0 if args.rehearse else 1
    protocol, images, cpu_batch = ("smoke", 64, 4) if args.rehearse else ("paper", CIFAR10_TRAIN, 8)
    torch.backends.cudnn.benchmark = True
    names = args.methods.split(",") if args.methods else method_names()
    out = ResultFile(args.out, rehearsal=args.rehearse, device=environment(device).model_dump(),
                     protocol=protocol, timed_steps=steps, warmup_steps=warmup, methods={})
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        result = out.measure(name, lambda name=name: measure(name, device, steps, warmup,
                                                             None if gpu else cpu_batch, protocol, images))
        if result is not None:
            out.data["methods"][name] = result
            print(json.dumps(result), file=sys.stderr, flush=True)
        sync(device)
        out.save()
    out.done()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch CPU throughput baseline for Ridgeline's engine benchmarks.

Measures samples/s for training and evaluation of small float32 models on the
CPU, with a fixed number of intra-op threads, so Ridgeline (candle) numbers can
be compared against PyTorch on the same machine.

Models
  mlp_784_256_10  Linear(784,256) -> ReLU -> Linear(256,10)          input [B,784]
  cnn_small       Conv2d(1,16,3,p=1) -> ReLU -> MaxPool2d(2) ->
                  Conv2d(16,32,3,p=1) -> ReLU -> MaxPool2d(2) ->
                  Flatten -> Linear(32*7*7,10)                       input [B,1,28,28]
  mlp_64_128_10   Linear(64,128) -> ReLU -> Linear(128,10)           input [B,64]

Data: N random examples (standard normal inputs, uniform labels in 0..10,
seeded) held in memory as one tensor; N = 4096 for the MLPs and 2048 for the
CNN (override with --examples).

Train pass: shuffle the indices (seeded generator), then for each batch of 64:
gather the batch, forward, cross-entropy, backward, SGD(lr=0.01,
momentum=0.9) step.  samples/s = N / wall time of the pass (shuffle and batch
gathering included, as an engine's training loop would do them).

Eval pass: forward only under torch.no_grad(), batches of --eval-batch (1024)
over the same N examples, in order.  Evaluate pass: the same, plus what an
evaluation reports: summed cross-entropy and correct predictions (argmax),
read back per batch.

One warm-up pass, then --repeats timed passes (default 5); the median is
reported.

Usage
  python3 bench/engine_pytorch.py                       # human table
  python3 bench/engine_pytorch.py --json                # one JSON object per line
  python3 bench/engine_pytorch.py --threads 1 --models mlp_64_128_10
  python3 bench/engine_pytorch.py --quick --json        # CI smoke test (seconds)

JSON line fields: engine ("pytorch"), model, phase ("train" | "eval" |
"evaluate"), batch (the batch size of that phase: 64 for train, --eval-batch
for the others), threads,
samples_per_s, median_of (number of timed passes).
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TRAIN_BATCH = 64
NUM_CLASSES = 10
SEED = 0


def make_mlp_784_256_10():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def make_cnn_small():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


def make_mlp_64_128_10():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


# name -> (constructor, per-example input shape, default N, quick N)
MODELS = {
    "mlp_784_256_10": (make_mlp_784_256_10, (784,), 4096, 256),
    "cnn_small": (make_cnn_small, (1, 28, 28), 2048, 128),
    "mlp_64_128_10": (make_mlp_64_128_10, (64,), 4096, 256),
}


def make_data(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g, dtype=torch.float32)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g, dtype=torch.int64)
    return x, y


def train_pass(model, opt, x, y, gen):
    n = x.shape[0]
    model.train()
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, TRAIN_BATCH):
        idx = perm[i:i + TRAIN_BATCH]
        xb = x.index_select(0, idx)
        yb = y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    return n


def eval_pass(model, x, batch):
    n = x.shape[0]
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            model(x[i:i + batch])
    return n


def evaluate_pass(model, x, y, batch):
    """What an evaluation reports: summed cross-entropy and correct
    predictions over all examples, forward under no_grad."""
    n = x.shape[0]
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch):
            out = model(x[i:i + batch])
            yb = y[i:i + batch]
            loss += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    return n


def timed(fn, repeats):
    fn()  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        rates.append(n / dt)
    return statistics.median(rates)


def bench_model(name, n, repeats, eval_batch):
    ctor, shape, _, _ = MODELS[name]
    torch.manual_seed(SEED)
    model = ctor()
    x, y = make_data(shape, n, SEED)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(SEED + 1)
    train = timed(lambda: train_pass(model, opt, x, y, gen), repeats)
    evl = timed(lambda: eval_pass(model, x, eval_batch), repeats)
    full = timed(lambda: evaluate_pass(model, x, y, eval_batch), repeats)
    return [
        ("train", TRAIN_BATCH, train),
        ("eval", eval_batch, evl),
        ("evaluate", eval_batch, full),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per measurement (default 5)")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated subset of: " + ", ".join(MODELS))
    p.add_argument("--eval-batch", type=int, default=1024, help="evaluation batch size (default 1024)")
    p.add_argument("--examples", type=int, default=None,
                   help="examples per pass for every model (default 4096 MLPs / 2048 CNN)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and 1 repeat, for CI smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    args = p.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        p.error(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.threads < 1 or args.repeats < 1 or args.eval_batch < 1:
        p.error("--threads, --repeats and --eval-batch must be >= 1")

    repeats = 1 if args.quick else args.repeats
    eval_batch = min(args.eval_batch, 128) if args.quick else args.eval_batch

    torch.set_num_interop_threads(1)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)

    rows = []
    for name in models:
        _, _, n_default, n_quick = MODELS[name]
        n = args.examples if args.examples is not None else (n_quick if args.quick else n_default)
        for phase, batch, rate in bench_model(name, n, repeats, eval_batch):
            row = {
                "engine": "pytorch",
                "model": name,
                "phase": phase,
                "batch": batch,
                "threads": args.threads,
                "samples_per_s": round(rate, 1),
                "median_of": repeats,
            }
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                rows.append((row, n))

    if not args.json:
        print(f"pytorch {torch.__version__} on CPU, threads={args.threads} "
              f"(interop 1), float32, median of {repeats}")
        header = f"{'model':<16} {'phase':<6} {'batch':>6} {'examples':>9} {'samples/s':>12}"
        print(header)
        print("-" * len(header))
        for row, n in rows:
            print(f"{row['model']:<16} {row['phase']:<6} {row['batch']:>6} {n:>9} "
                  f"{row['samples_per_s']:>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

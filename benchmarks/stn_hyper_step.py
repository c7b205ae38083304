"""STN's hyperparameter (λ) step against its training step on the PTB language model, at 2x200 and 2x650.

For each size, in one process and with the variants interleaved step by step (so that load from other processes
hits them alike), medians over ``--reps`` steps after ``--warmup``:

* ``train``: the STN trainer's weight step (:meth:`~hpobench_stn.stn.trainer.StnTrainer.train_step`: perturbed λ̃,
  training-mode forward with every regulariser, backward into every weight, clipping, SGD step);
* ``forward+backward``: the same forward and backward without the optimiser step (the work a λ step is set against);
* ``lambda``: the trainer's λ step (:meth:`~hpobench_stn.stn.trainer.StnTrainer.hyper_step`: evaluation-mode forward
  with the weights frozen, the gradient of λ only, Adam step on λ);
* ``lambda, weights in graph``: the same λ step with the weights left in the autograd graph, as it was before: the
  STN LSTM's hand-written backward cannot see that ``autograd.grad`` asks for λ alone, so it also forms the
  recurrent weight gradient and throws it away.

Sizes: 2x200 at BPTT 35, batch 20 (the ``cpu`` preset's model) and 2x650 at BPTT 70, batch 40 (the paper's). Data:
the full PTB when ``--data-dir`` (or ``HPOBENCH_STN_DATA``) has it, else the shipped slice (a smaller vocabulary).
Usage: ``python benchmarks/stn_hyper_step.py [--sizes 200,650] [--reps N] [--warmup N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.stn.trainer import StnSettings, StnTrainer

sys.path.insert(0, os.path.dirname(__file__))
from ptb_throughput import make_task  # a sibling script

SHAPES = {200: (35, 20), 650: (70, 40)}  # hidden size -> (BPTT, batch)


def forward_backward(trainer: StnTrainer, batch: Any) -> None:
    """The weight step's forward and backward at perturbed λ̃, without the optimiser step."""
    problem = trainer.problem
    problem.model.train()
    size = problem.batch_size(batch)
    with torch.no_grad():
        u_tilde = trainer.hyper.sample(size, trainer.generator)
        values = trainer.hyper.task_values(u_tilde)
    trainer.weight_opt.zero_grad(set_to_none=True)
    problem.loss(batch, u_tilde, values, train=True).backward()


def lambda_step_weights_in_graph(trainer: StnTrainer, batch: Any) -> None:
    """:meth:`StnTrainer.hyper_step` as it was: the forward with the weights in the autograd graph."""
    problem, s = trainer.problem, trainer.settings
    problem.model.eval()
    size = problem.batch_size(batch)
    u_tilde = trainer.hyper.sample(size, trainer.generator) if s.tune_sigma else trainer.hyper.centre(size)
    loss = problem.loss(batch, u_tilde, trainer.hyper.task_values(u_tilde), train=False)  # STN: the gates see λ̃
    objective = loss - s.tau * trainer.hyper.entropy() if s.tune_sigma else loss
    grads = torch.autograd.grad(objective, trainer.hyper_params)
    trainer.hyper_opt.zero_grad(set_to_none=True)
    for p, g in zip(trainer.hyper_params, grads, strict=True):
        p.grad = g
    trainer.hyper_opt.step()


def time_size(hidden: int, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of each variant at one model size."""
    bptt, batch = SHAPES[hidden]
    task = make_task(argparse.Namespace(hidden=hidden, bptt=bptt, batch=batch, data_dir=args.data_dir))
    problem = task.stn_problem(0)
    trainer = StnTrainer(problem, StnSettings(warmup_steps=0).resolved(problem, task.max_epochs), 0)
    meter = BudgetMeter(Budget(epochs=1e9), task.train_size)
    steps = args.warmup + args.reps
    train = list(problem.train_batches(trainer.generator))[:steps]
    hyper = list(problem.val_batches(trainer.generator))[:steps]
    variants: dict[str, Callable[[int], Any]] = {
        "train": lambda i: trainer.train_step(train[i], meter),
        "forward+backward": lambda i: forward_backward(trainer, train[i]),
        "lambda": lambda i: trainer.hyper_step(hyper[i], meter),
        "lambda, weights in graph": lambda i: lambda_step_weights_in_graph(trainer, hyper[i]),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(steps):
        for name, step in variants.items():
            start = time.perf_counter()
            step(i)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    print(f"2x{hidden}, BPTT {bptt}, batch {batch}; vocabulary {len(task.corpus.vocab)} ({task.corpus.source})")
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    """Time the variants at each size and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,650", help="hidden sizes, comma-separated (200 and/or 650)")
    parser.add_argument("--reps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.warmup} warm-up + {args.reps} timed steps each, "
        "interleaved; medians"
    )
    for hidden in (int(s) for s in args.sizes.split(",")):
        med = time_size(hidden, args)
        print(f"  {'step':26s} {'median s':>9s} {'/ fwd+bwd':>10s} {'/ train':>8s}")
        for name, t in med.items():
            print(f"  {name:26s} {t:9.4f} {t / med['forward+backward']:10.2f} {t / med['train']:8.2f}")
        saved = med["lambda, weights in graph"] - med["lambda"]
        print(f"  the frozen weights save {saved:.4f} s of the {med['lambda, weights in graph']:.4f} s λ step")
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

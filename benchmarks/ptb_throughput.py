"""PTB training throughput: the task's fixed-configuration model against a plain LSTM LM, and STN against fixed.

Three training steps on the same real PTB windows, timed in one process with their steps interleaved (so that
load on the machine hits all alike); medians over repeated steps after warm-up:

* ``plain``: an unregularised LSTM language model of the same size (``nn.Embedding``, one 2-layer ``nn.LSTM``,
  tied decoder, cross-entropy), SGD with gradient clipping: the speed to match;
* ``fixed``: the task's black-box training step (:meth:`tasks.ptb.task.PtbTrial.train_step`) at the space's
  default configuration, every regulariser on (three variational dropouts, word dropout, DropConnect through
  the fused kernel, AR, TAR); target at least 0.9x ``plain``'s tokens/s;
* ``stn``: the STN trainer's weight step on the task's STN model (:meth:`StnTrainer.train_step`: perturbed λ̃ per
  sequence, the same regularisers, STN layers); target at most 2.2x ``fixed``'s step time. The STN
  hyperparameter step (evaluation mode, gradient for λ only) is timed too.

Data: the full PTB when ``--data-dir`` (or ``HPOBENCH_STN_DATA``) has it, else the shipped slice.
Usage: ``python benchmarks/ptb_throughput.py [--hidden 650 --bptt 70 --batch 40] [--reps N] [--warmup N]``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.stn.trainer import StnSettings, StnTrainer
from hpobench_stn.task import Preset
from tasks.ptb.model import windows
from tasks.ptb.task import PtbTask


class PlainLM(nn.Module):
    """The unregularised reference: embedding, one multi-layer ``nn.LSTM``, tied decoder."""

    def __init__(self, vocab: int, size: int, layers: int) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, size)
        self.lstm = nn.LSTM(size, size, layers)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Logits ``(T, B, V)`` and the new state."""
        out, state = self.lstm(self.encoder(tokens), state)
        return self.decoder(out), state


def make_task(args: argparse.Namespace) -> PtbTask:
    """A task instance at the requested sizes (full data when available, else the shipped slice)."""
    data_dir = args.data_dir or os.environ.get("HPOBENCH_STN_DATA")
    sizes = {
        "embedding_size": args.hidden,
        "hidden_size": args.hidden,
        "bptt": args.bptt,
        "batch_size": args.batch,
        "train_tokens": None,
    }
    base = PtbTask.presets["paper" if data_dir else "tiny"]

    class BenchTask(PtbTask):
        presets: ClassVar[dict[str, Preset]] = {
            "bench": replace(base, name="bench", settings={**base.settings, **sizes})
        }

    return BenchTask("bench", data_dir=data_dir)


def main() -> None:
    """Time the steps and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=200, help="embedding and hidden units per layer")
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--reps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant first")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("$ python " + " ".join(shlex.quote(a) for a in sys.argv))
    task = make_task(args)
    torch.manual_seed(0)
    batches = list(windows(task.train_stream, args.bptt))[: args.warmup + args.reps]
    vocab = len(task.corpus.vocab)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: {task.corpus.source} "
        f"(vocab {vocab}); 2x{args.hidden} tied LSTM LM, BPTT {args.bptt}, batch {args.batch}; "
        f"{args.warmup} warm-up + {args.reps} timed steps each, interleaved; medians"
    )

    plain = PlainLM(vocab, args.hidden, 2)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=30.0)
    trial = task.make_trial(task.space.default(), seed=0)
    values = trial.values(args.batch)
    problem = task.stn_problem(0)
    settings = StnSettings(warmup_steps=0).resolved(problem, task.max_epochs)
    trainer = StnTrainer(problem, settings, 0)
    stn_windows = list(problem.train_batches(trainer.generator))[: args.warmup + args.reps]
    hyper_windows = problem.val_batches(trainer.generator)
    meter = BudgetMeter(Budget(epochs=1e9), task.train_size)

    def plain_step(i: int) -> None:
        inputs, targets = batches[i]
        logits, _ = plain(inputs, None)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.reshape(-1))
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.25)
        plain_opt.step()

    def fixed_step(i: int) -> None:
        trial.model.train()
        trial.train_step(*batches[i], None, values)

    def stn_step(i: int) -> None:
        trainer.train_step(stn_windows[i], meter)

    def hyper_step(i: int) -> None:
        trainer.hyper_step(next(hyper_windows), meter)

    steps: dict[str, Callable[[int], None]] = {
        "plain": plain_step,
        "fixed": fixed_step,
        "stn": stn_step,
        "stn-hyper": hyper_step,
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step(i)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = args.bptt * args.batch
    print(f"{'step':10s} {'median s':>9s} {'tokens/s':>9s} {'throughput/plain':>17s} {'time/fixed':>11s}")
    for name, t in med.items():
        print(f"{name:10s} {t:9.4f} {tokens / t:9.0f} {med['plain'] / t:17.2f} {t / med['fixed']:11.2f}")
    print(
        f"fixed-configuration throughput / plain nn.LSTM LM: {med['plain'] / med['fixed']:.2f} (target >= 0.9); "
        f"STN training step / fixed step: {med['stn'] / med['fixed']:.2f} (target <= 2.2)"
    )


if __name__ == "__main__":
    main()

"""Cost of the STN layers against the plain torch.nn layers: time per training step and FLOPs, side by side.

Two models, each built twice (STN layers and plain layers), timed in one process with the steps of the two
variants interleaved (so that load on the machine hits both alike); medians over repeated steps after warm-up:

* a small CNN on 32x32 inputs, batch 128, 15 hyperparameters: conv 3->64 3x3 stride 2, conv 64->128 3x3, flatten,
  linear ->256, linear ->10 (ReLU between, cross-entropy loss);
* a one-layer LSTM, 200 inputs and hidden units, BPTT 35, batch 20, 7 hyperparameters (as PTB), against
  ``nn.LSTM``; the STN LSTM is timed with its fused recurrence (default) and with the plain autograd loop.

A training step is forward, backward and one SGD step (lr 0.01, momentum 0.9) on all weights; the STN models get
a fixed ``(B, n)`` batch of hyperparameters. FLOPs are the matrix-multiply and convolution FLOPs (2 per
multiply-add) of one training step: counted with ``torch.utils.flop_counter.FlopCounterMode`` for the CNNs
and the STN LSTM, and analytically for the LSTMs (the fused ``nn.LSTM`` kernel is invisible to the counter).

Usage: ``python benchmarks/stn_layers.py [--reps N] [--warmup N]``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from hpobench_stn.stn.layers import StnConv2d, StnLinear
from hpobench_stn.stn.lstm import StnLSTM

Step = Callable[[], None]


class PlainCNN(nn.Module):
    """The reference CNN from plain layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc1 = nn.Linear(128 * 16 * 16, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 10)`` for images ``(B, 3, 32, 32)``."""
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class StnCNN(nn.Module):
    """The same CNN from STN layers."""

    def __init__(self, n_hparams: int) -> None:
        super().__init__()
        self.conv1 = StnConv2d(3, 64, 3, n_hparams, stride=2, padding=1)
        self.conv2 = StnConv2d(64, 128, 3, n_hparams, padding=1)
        self.fc1 = StnLinear(128 * 16 * 16, 256, n_hparams)
        self.fc2 = StnLinear(256, 10, n_hparams)

    def forward(self, x: Tensor, hp: Tensor) -> Tensor:
        """Logits ``(B, 10)`` for images ``(B, 3, 32, 32)`` and hyperparameters ``(B, n)``."""
        x = F.relu(self.conv2(F.relu(self.conv1(x, hp)), hp))
        return self.fc2(F.relu(self.fc1(x.flatten(1), hp)), hp)


def train_step(model: nn.Module, forward: Callable[[], Tensor], target: Tensor | None) -> Step:
    """A closure doing forward, loss, backward and one SGD step on ``model``'s parameters."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        out = forward()
        loss = F.cross_entropy(out, target) if target is not None else out.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def counted_flops(step: Step) -> int:
    """Matmul/convolution FLOPs of one call of ``step`` as seen by ``FlopCounterMode``."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def lstm_flops(seq: int, batch: int, n_in: int, hidden: int, n_hparams: int | None) -> int:
    """Analytic matmul FLOPs of a training step of a one-layer LSTM (STN when ``n_hparams`` is given).

    Multiply-adds of the plain LSTM: forward ``T·B·4H·(I + H)``; backward the weight gradients (the same again)
    and the gradient with respect to the hidden state ``T·B·4H·H`` (the inputs need none), so
    ``T·B·4H·(2I + 3H)`` in all. STN doubles every product and adds its two gate maps ``n -> 8H``
    (forward and weight gradient: ``2·2·B·n·8H``). 2 FLOPs per multiply-add.
    """
    macs = seq * batch * 4 * hidden * (2 * n_in + 3 * hidden)
    if n_hparams is not None:
        macs = 2 * macs + 4 * batch * n_hparams * 8 * hidden
    return 2 * macs


def time_interleaved(steps: dict[str, Step], warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each step; the steps are called in turn so that they share the load."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def report(title: str, seconds: dict[str, float], flops: dict[str, int], reference: str) -> None:
    """Print one table: ms per step, time ratio, GFLOP per step and FLOP ratio against ``reference``."""
    print(f"\n{title}")
    print(f"{'variant':<28}{'ms/step':>10}{'time ratio':>12}{'GFLOP/step':>12}{'FLOP ratio':>12}")
    for name, sec in seconds.items():
        print(
            f"{name:<28}{sec * 1e3:>10.1f}{sec / seconds[reference]:>12.2f}"
            f"{flops[name] / 1e9:>12.3f}{flops[name] / flops[reference]:>12.2f}"
        )


def main() -> None:
    """Run both benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=15, help="timed steps per variant (LSTM: twice this)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print("command:", shlex.join(sys.orig_argv))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    torch.manual_seed(args.seed)

    # ---- CNN, batch 128, 32x32, 15 hyperparameters
    n_hp, batch = 15, 128
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    hp = torch.randn(batch, n_hp)
    plain_cnn, stn_cnn = PlainCNN(), StnCNN(n_hp)
    cnn_steps = {
        "plain nn layers": train_step(plain_cnn, lambda: plain_cnn(x), y),
        "STN layers": train_step(stn_cnn, lambda: stn_cnn(x, hp), y),
    }
    cnn_flops = {name: counted_flops(step) for name, step in cnn_steps.items()}
    cnn_time = time_interleaved(cnn_steps, args.warmup, args.reps)
    report(
        "CNN conv3-64/s2, conv64-128, fc->256, fc->10; 32x32, batch 128, n=15 (FLOPs: FlopCounterMode)",
        cnn_time,
        cnn_flops,
        "plain nn layers",
    )

    # ---- LSTM 200-200, BPTT 35, batch 20, 7 hyperparameters
    seq, batch, size, n_hp = 35, 20, 200, 7
    xs = torch.randn(seq, batch, size)
    hp = torch.randn(batch, n_hp)
    lstm = nn.LSTM(size, size)
    stn_fused = StnLSTM(size, size, n_hp, fused=True)
    stn_loop = StnLSTM(size, size, n_hp, fused=False)
    lstm_steps = {
        "nn.LSTM": train_step(lstm, lambda: lstm(xs)[0], None),
        "StnLSTM (fused)": train_step(stn_fused, lambda: stn_fused(xs, hp)[0], None),
        "StnLSTM (autograd loop)": train_step(stn_loop, lambda: stn_loop(xs, hp)[0], None),
    }
    plain_f = lstm_flops(seq, batch, size, size, None)
    stn_f = lstm_flops(seq, batch, size, size, n_hp)
    lstm_flop = {"nn.LSTM": plain_f, "StnLSTM (fused)": stn_f, "StnLSTM (autograd loop)": stn_f}
    counted = counted_flops(lstm_steps["StnLSTM (fused)"])
    lstm_time = time_interleaved(lstm_steps, args.warmup, 2 * args.reps)
    report(
        "LSTM 200-200, BPTT 35, batch 20, n=7 (FLOPs: analytic)",
        lstm_time,
        lstm_flop,
        "nn.LSTM",
    )
    print(f"(FlopCounterMode on the fused StnLSTM step: {counted / 1e9:.3f} GFLOP, analytic {stn_f / 1e9:.3f})")


if __name__ == "__main__":
    main()

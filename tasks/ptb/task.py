"""PTB: a 2-layer tied-weight LSTM language model with the STN paper's seven regularisation hyperparameters.

Search space (the same for every optimizer; STN starts every hyperparameter at 0.05, as the paper did):

===================== ================ ======== ===== ===================================================
name                  bounds           scale    init  perturbed (STN)
===================== ================ ======== ===== ===================================================
``dropout_output``    [0, 0.9]         rate     0.05  per sequence (variational dropout on the LSTM output)
``dropout_input``     [0, 0.9]         rate     0.05  per sequence (variational dropout on the embeddings)
``dropout_hidden``    [0, 0.9]         rate     0.05  per sequence (variational dropout between layers)
``dropout_embedding`` [0, 0.9]         rate     0.05  per minibatch (drops whole word types)
``dropconnect``       [0, 0.9]         rate     0.05  per minibatch (hidden-to-hidden weights)
``alpha``             [1e-3, 10]       log      0.05  per minibatch (activation regularisation)
``beta``              [1e-3, 10]       log      0.05  per minibatch (temporal activation regularisation)
===================== ================ ======== ===== ===================================================

Rates are capped at 0.9 (the reference code's cap) and sampled uniformly by black-box methods; α and β are
sampled log-uniformly over four decades around the usual AWD-LSTM values (α = 2, β = 1). What each one does is in
:mod:`tasks.ptb.model`.

Training (black-box door, and the STN door through :class:`~tasks.ptb.stn.PtbStnProblem`): the training text is
batchified into ``batch_size`` contiguous columns and read in windows of ``bptt`` steps in order (no shuffling;
the last window of an epoch is shorter); the hidden state is carried across windows (detached) and reset to zero
at the start of every epoch. Plain SGD (no momentum, no weight decay) at the preset's learning rate, gradient norm
clipped at ``clip``. Learning-rate rule (the reference STN PTB code's): after each epoch's validation, with
``history`` the validation losses of the previous epochs, the learning rate is divided by ``lr_decay`` (4) when
``len(history) > nonmono and val_loss > min(history[:-nonmono])``, i.e. when this epoch is worse than the best
epoch older than the last ``nonmono`` epochs. (The reference also stops when the learning rate falls below 3e-4 or
after 20 epochs without improvement; here the preset's epoch count and the run's budget decide.)

One *example* (what the budget meter counts) is one row of one BPTT window: a training epoch is
``windows × batch_size`` examples. Objective: the plain validation cross-entropy per token (no dropout, no α/β
terms) of the model after each epoch, evaluated over the whole validation split with state carried across
windows at ``eval_batch_size`` columns. Metrics: ``loss`` (mean token cross-entropy, nats) and ``perplexity``
(its exponential); the test metrics are those of the best epoch's weights, at ``test_batch_size`` columns.

Presets:

* ``tiny`` (tests, seconds): the shipped slice (``tasks/ptb/data/``: the first tenth of each split, its own
  vocabulary of 6,786 types), the first 10,000 training tokens, a 2x32 model, BPTT 20, batch 10, 2 epochs.
* ``cpu`` (this class of machine: one trial in about two minutes on 2 cores): the full data's vocabulary and its
  whole validation and test splits, the first 80,000 training tokens (8.6%; 115 windows), a 2x200 model (the size
  the issue calibrated: about 0.1 s a window on 2 free cores), BPTT 35, batch 20, validation and test batch 20,
  6 epochs, ``nonmono`` 1. Why: the 10,000-word softmax dominates the cost at any hidden size (2x128 was only 17%
  cheaper a window than 2x200), and in two minutes the model is update-limited rather than over-fitted: at the
  default configuration a 40k-token slice trained for 8 epochs reached validation perplexity 533, the 80k slice
  342 after 6 epochs, where its validation loss flattens (339 after 8). An AWD-LSTM-like configuration (dropouts
  0.4/0.4/0.25/0.1, DropConnect 0.5, α 2, β 1) reached 344 after 7 epochs against the default's 343: within
  one trial moderate regularisation costs little and gains little, so this preset asks the optimizers for a
  fine balance rather than a large gain. ``nonmono`` 1 lets the learning-rate rule fire within 6 epochs.
  Measured on this machine while other jobs loaded it (load average 4–5 on 2 cores): 29 s of CPU time an
  epoch on one thread (about 23 s training, 6 s validation), so about 3 minutes a trial on one thread and about
  2 on two free cores (the issue's calibration of this model size: 2–3 minutes for the 1,328 windows of the
  full text); a 2-thread trial through the harness took 16 minutes of wall-clock (12 of them metered training)
  under that load, where OpenMP threads that lose their core stall every kernel.
* ``paper``: the paper's model, 650 embedding and hidden units, BPTT 70, batch 40, SGD lr 30, clip 0.25, full
  data, validation batch 10 and test batch 1 as the reference, ``nonmono`` 5 and decay 4 as the reference; 100
  epochs a trial (our choice: the reference trains until its learning rate or patience runs out; a GPU's job).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.errors import UserError
from hpobench_stn.space import Config, Float, Rate, SearchSpace
from hpobench_stn.task import Preset, Task
from hpobench_stn.torch_trial import NonMonotonicRule, TorchTrial
from tasks.ptb import data as ptb_data
from tasks.ptb.model import (
    HPARAMS,
    PtbLanguageModel,
    State,
    detach_state,
    evaluate_stream,
    lm_loss,
    n_windows,
    windows,
)

HPARAM_INIT = 0.05  # the paper's starting value for every hyperparameter
RATE_HIGH = 0.9
PENALTY_LOW, PENALTY_HIGH = 1e-3, 10.0


def ptb_space() -> SearchSpace:
    """The seven hyperparameters (see the module docstring for bounds and granularity)."""
    descriptions = {
        "dropout_output": "variational dropout on the last LSTM layer's output",
        "dropout_input": "variational dropout on the embedded words",
        "dropout_hidden": "variational dropout between LSTM layers",
        "dropout_embedding": "word dropout: drops whole rows of the embedding matrix per minibatch",
        "dropconnect": "DropConnect on the hidden-to-hidden weights, one mask per minibatch",
        "alpha": "activation regularisation weight (L2 of the dropped last-layer output)",
        "beta": "temporal activation regularisation weight (L2 of h_t - h_{t-1}, last layer)",
    }
    per_example = {"dropout_output", "dropout_input", "dropout_hidden"}
    hps = []
    for name in HPARAMS:
        if name in ("alpha", "beta"):
            hp = Float(
                name,
                PENALTY_LOW,
                PENALTY_HIGH,
                log=True,
                init=HPARAM_INIT,
                per_example=False,
                description=descriptions[name],
            )
        else:
            hp = Rate(
                name,
                0.0,
                RATE_HIGH,
                init=HPARAM_INIT,
                per_example=name in per_example,
                description=descriptions[name],
            )
        hps.append(hp)
    return SearchSpace(hps)


class NonMonotonicDecay(NonMonotonicRule):
    """The reference PTB code's learning-rate rule (see the module docstring): the learning rate divided by
    ``factor`` when :class:`~hpobench_stn.torch_trial.NonMonotonicRule` fires."""

    def __init__(self, nonmono: int, factor: float) -> None:
        if nonmono < 1 or factor <= 1:
            raise ValueError("nonmono must be at least 1 and the decay factor above 1")
        super().__init__(nonmono)
        self.factor = factor

    def decayed(self, lr: float) -> float:
        """``lr / factor``."""
        return lr / self.factor


def perplexity(loss: float) -> float:
    """``exp(loss)``, infinite instead of overflowing."""
    return math.exp(loss) if loss < 700 else math.inf


class PtbTrial(TorchTrial):
    """One training of the fixed-hyperparameter language model (fused ``nn.LSTM``)."""

    task: PtbTask

    def __init__(self, task: PtbTask, config: Config, seed: int) -> None:
        super().__init__(task, config, seed)
        s = task.preset.settings
        self.model = task.build_model(stn=False, seed=seed)
        self.generator = torch.Generator(device=task.torch_device).manual_seed(seed)
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=s["lr"])
        self.decay = NonMonotonicDecay(s["nonmono"], s["lr_decay"])

    @property
    def generators(self) -> dict[str, torch.Generator]:
        """The dropout-mask generator."""
        return {"generator": self.generator}

    def values(self, batch: int) -> Tensor:
        """The configuration as a ``(batch, 7)`` tensor of regulariser values, one row per sequence."""
        row = torch.tensor([float(self.config[n]) for n in HPARAMS], device=self.task.torch_device)
        return row.expand(batch, len(HPARAMS))

    @property
    def lr(self) -> float:
        """The current learning rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def train_windows(self, meter: BudgetMeter, limit: int | None = None) -> Tensor | None:
        """Train on the epoch's windows in order (the first ``limit`` only, when given), from a zero state; returns
        the mean of the windows' training losses, on the device (``None`` when no window was trained)."""
        s = self.task.preset.settings
        values = self.values(s["batch_size"])
        self.model.train()
        state = None
        losses = []
        for i, (inputs, targets) in enumerate(windows(self.task.train_stream, s["bptt"])):
            if limit is not None and i >= limit:
                break
            meter.charge(inputs.shape[1])
            state, loss = self.train_step(inputs, targets, state, values)
            losses.append(loss)
        return torch.stack(losses).mean() if losses else None

    def train_step(self, inputs: Tensor, targets: Tensor, state: State | None, values: Tensor) -> tuple[State, Tensor]:
        """One SGD step on one window (model in training mode); returns the detached state to carry on and the
        window's training loss (detached, on the device)."""
        out = self.model(inputs, state, values, generator=self.generator)
        loss = lm_loss(out, targets, values, train=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.task.preset.settings["clip"])
        self.optimizer.step()
        return detach_state(out.state), loss.detach()

    def _train_one_epoch(self, meter: BudgetMeter) -> Tensor | None:
        return self.train_windows(meter)

    def evaluate_split(self, split: str, stream: Tensor | None = None) -> dict[str, float]:
        """Loss and perplexity of the current weights on ``split`` ("val", "test"), or on a given stream."""
        stream = self.task.eval_stream(split) if stream is None else stream
        self.model.eval()
        loss = evaluate_stream(self.model, stream, self.task.preset.settings["bptt"], self.values(stream.shape[1]))
        return {"loss": loss, "perplexity": perplexity(loss)}

    def _evaluate_model(self, split: str) -> dict[str, float]:
        return self.evaluate_split(split)


def _preset(name: str, description: str, epochs: int, **settings: Any) -> Preset:
    base = {
        "data": "full",
        "train_tokens": None,
        "embedding_size": 650,
        "hidden_size": 650,
        "layers": 2,
        "bptt": 70,
        "batch_size": 40,
        "eval_batch_size": 10,
        "test_batch_size": 1,
        "lr": 30.0,
        "clip": 0.25,
        "lr_decay": 4.0,
        "nonmono": 5,
        "signature_windows": 3,
        "signature_val_tokens": 10_000,
    }
    return Preset.from_defaults(name, description, epochs, base, settings)


class PtbTask(Task):
    """Penn Treebank language modelling with seven regularisation hyperparameters (see the module docstring)."""

    name = "ptb"
    description = (
        "PTB word-level LSTM language model, 7 regularisation hyperparameters (dropouts, DropConnect, AR, TAR)"
    )
    presets: ClassVar[dict[str, Preset]] = {
        "tiny": _preset(
            "tiny",
            "shipped PTB slice, first 10k training tokens, 2x32 LSTM, BPTT 20, batch 10, 2 epochs (tests, seconds)",
            2,
            data="slice",
            train_tokens=10_000,
            embedding_size=32,
            hidden_size=32,
            bptt=20,
            batch_size=10,
            eval_batch_size=10,
            test_batch_size=10,
            nonmono=1,
            signature_windows=20,
            signature_val_tokens=4_000,
        ),
        "cpu": _preset(
            "cpu",
            "full-PTB vocabulary and validation/test, first 80k training tokens, 2x200 LSTM, BPTT 35, batch 20, "
            "6 epochs (about 2 minutes a trial on 2 free cores)",
            6,
            train_tokens=80_000,
            embedding_size=200,
            hidden_size=200,
            bptt=35,
            batch_size=20,
            eval_batch_size=20,
            test_batch_size=20,
            nonmono=1,
            signature_windows=5,
        ),
        "paper": _preset(
            "paper",
            "the paper's model: full PTB, 2x650 tied LSTM, BPTT 70, batch 40, SGD lr 30, clip 0.25, 100 epochs (GPU)",
            100,
        ),
    }

    def __init__(self, preset: str = "tiny", **options: Any) -> None:
        super().__init__(preset, **options)
        s = self.preset.settings
        if s["data"] == "slice":
            self.corpus = ptb_data.load_slice()
        else:
            self.corpus = ptb_data.load_full(self.data_dir, self.download)
        train = self.corpus.train
        if s["train_tokens"] is not None:
            train = train[: s["train_tokens"]]
        self.torch_device = torch.device(self.device)
        self.train_stream = ptb_data.batchify(train, s["batch_size"]).to(self.torch_device)

    @cached_property
    def space(self) -> SearchSpace:
        """The seven hyperparameters."""
        return ptb_space()

    @property
    def train_size(self) -> int:
        """Examples per epoch: BPTT windows times batch columns."""
        s = self.preset.settings
        return n_windows(self.train_stream, s["bptt"]) * s["batch_size"]

    @property
    def windows_per_epoch(self) -> int:
        """Training minibatches per epoch."""
        return n_windows(self.train_stream, self.preset.settings["bptt"])

    @cached_property
    def _eval_streams(self) -> dict[str, Tensor]:
        s = self.preset.settings
        return {
            "val": ptb_data.batchify(self.corpus.valid, s["eval_batch_size"]).to(self.torch_device),
            "test": ptb_data.batchify(self.corpus.test, s["test_batch_size"]).to(self.torch_device),
            "hyper": ptb_data.batchify(self.corpus.valid, s["batch_size"]).to(self.torch_device),
        }

    def eval_stream(self, split: str) -> Tensor:
        """The batchified ``"val"`` or ``"test"`` split used for evaluation (``"hyper"``: validation at the
        training batch size, for STN's hyperparameter steps)."""
        if split not in self._eval_streams:
            raise UserError(f"unknown split {split!r}; use 'val' or 'test'")
        return self._eval_streams[split]

    def build_model(self, stn: bool, seed: int, gate_init: str = "normal") -> PtbLanguageModel:
        """The preset's language model, initialised from ``seed`` (the global RNG is left untouched)."""
        s = self.preset.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = PtbLanguageModel(
                len(self.corpus.vocab),
                s["embedding_size"],
                s["hidden_size"],
                s["layers"],
                stn=stn,
                n_hparams=len(HPARAMS),
                gate_init=gate_init,  # type: ignore[arg-type]
            )
        return model.to(self.torch_device)

    def make_trial(self, config: Config, seed: int) -> PtbTrial:
        """A fresh fixed-hyperparameter model at ``config``."""
        return PtbTrial(self, self.space.validate(config), seed)

    def stn_problem(self, seed: int) -> Any:
        """The white-box door: the same model with STN layers (see ``tasks.ptb.stn``)."""
        from tasks.ptb.stn import PtbStnProblem

        return PtbStnProblem(self, seed)

    def signature(self) -> dict[str, float]:
        """Data facts, and validation losses (on the first ``signature_val_tokens`` tokens) of seed-0 models at
        the default, lowest and highest configurations after ``signature_windows`` training windows."""
        s = self.preset.settings
        out = {
            "vocab": float(len(self.corpus.vocab)),
            "train_tokens": float(self.train_stream.numel()),
            "valid_tokens": float(self.corpus.valid.numel()),
            "test_tokens": float(self.corpus.test.numel()),
            "train_id_mean": float(self.train_stream.double().mean()),
            "valid_id_mean": float(self.corpus.valid.double().mean()),
        }
        probe_stream = ptb_data.batchify(self.corpus.valid[: s["signature_val_tokens"]], s["eval_batch_size"])
        for probe, config in self.probe_configs().items():
            trial = self.make_trial(config, seed=0)
            if probe == "default":
                out["val_loss_init"] = trial.evaluate_split("val", probe_stream.to(self.torch_device))["loss"]
            trial.train_windows(BudgetMeter(Budget(epochs=1), self.train_size), s["signature_windows"])
            out[f"val_loss_{probe}"] = trial.evaluate_split("val", probe_stream.to(self.torch_device))["loss"]
        return out

    def describe(self) -> dict[str, Any]:
        """The base description plus the data source and the vocabulary size."""
        info = super().describe()
        info["data"] = {
            "source": self.corpus.source,
            "vocab": len(self.corpus.vocab),
            "train_tokens": int(self.train_stream.numel()),
            "valid_tokens": int(self.corpus.valid.numel()),
            "test_tokens": int(self.corpus.test.numel()),
        }
        return info

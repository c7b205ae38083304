"""The generic white-box door: STN and Delta-STN for any :class:`~hpobench_stn.torch_task.TorchTask`.

The task's plain network, initialised from the run's seed exactly as a black-box trial at that seed starts, is
converted to its STN twin (:mod:`hpobench_stn.stn.convert`: elementary weights copied, response weights and gate
maps initialised by the STN layers, from a generator seeded by the seed too); every layer's gates see all the
task's hyperparameters. A training pass applies the declared regularisers at each example's own values
(:mod:`hpobench_stn.regularisers`): augmentations, per-example dropout, the penalty of the weights each example
used, loss terms; an evaluation pass is the plain loss. Data, batches, loss, metrics, optimizer, gradient
clipping and learning-rate rule are the task's own, as in its black-box door.

:meth:`TorchStnProblem.outputs` returns :class:`StnOutputs`, the network's outputs together with the gates that
produced them, and :meth:`TorchStnProblem.criterion` reads those gates for the penalties; so Delta-STN's
linearised variant (``linearize=True``), which adds the Jacobian-vector product of :meth:`outputs` in the gates
to its detached value, penalises exactly the weights at the perturbed gates and linearises only the outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from hpobench_stn.errors import UserError
from hpobench_stn.stn.convert import GateFeed, to_stn
from hpobench_stn.stn.problem import GateFn, StnProblem

if TYPE_CHECKING:
    from hpobench_stn.torch_task import Pair, TorchTask

#: Added to the run's seed for the generator of the response weights, gate maps and dropout masks.
_STN_SEED_OFFSET = 1_000_003


class StnOutputs(NamedTuple):
    """The network's outputs (any tensor or nested tuple/list/dict of tensors) and the gates ``(B, n)`` of the pass.

    ``detach()`` and ``+`` act leaf by leaf, which is what Delta-STN's linearisation does to an output."""

    prediction: Any
    gates: Tensor

    def detach(self) -> StnOutputs:
        """Every leaf detached."""
        return StnOutputs(tree_map(lambda t: t.detach(), self.prediction), self.gates.detach())

    def __add__(self, other: object) -> StnOutputs:  # type: ignore[override]
        if not isinstance(other, StnOutputs):
            return NotImplemented
        return StnOutputs(tree_map(torch.add, self.prediction, other.prediction), self.gates + other.gates)


class TorchStnProblem(StnProblem):
    """A :class:`~hpobench_stn.torch_task.TorchTask`'s network with STN layers, its data and its losses."""

    def __init__(self, task: TorchTask, seed: int) -> None:
        if len(task.space) == 0:
            raise UserError(f"task {task.name!r} declares no hyperparameters, so STN has nothing to tune")
        self.task = task
        self.space = task.space
        self.train_size = task.train_size
        self.device = task.torch_device
        regs = task.regularisers
        self.regularisers = regs
        plain = task.new_model(seed)
        dropouts = regs.dropout_columns(plain)
        penalties = regs.penalty_names(plain)
        self.noise = torch.Generator(device=self.device).manual_seed(seed + _STN_SEED_OFFSET)
        self.feed = GateFeed(self.noise)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(torch.Generator().manual_seed(seed + _STN_SEED_OFFSET).get_state())
            self.model = to_stn(plain, len(task.space), self.feed, dropouts, task.plain_modules).to(self.device)
        self.penalties = regs.bind_penalties(self.model, penalties)
        self.rule = task.lr_rule()
        self.defaults = task.stn_defaults()

    # --- data ---------------------------------------------------------------------------------------------------
    def train_batches(self, generator: torch.Generator) -> Iterator[Pair]:
        """Shuffled training minibatches, as the black-box door draws them."""
        return self.task.batches("train", generator)

    def val_batches(self, generator: torch.Generator) -> Iterator[Pair]:
        """Shuffled validation minibatches at the training batch size (the hyperparameter steps)."""
        return self.task.batches("val", generator)

    def batch_size(self, batch: Pair) -> int:
        """Examples in the batch."""
        return int(batch[0].shape[0])

    # --- losses -------------------------------------------------------------------------------------------------
    def forward(self, x: Any, gates: Tensor, values: Tensor | None) -> Any:
        """The network on inputs ``x`` with ``gates`` ``(B, n)``; ``values`` drive the dropout twins (training)."""
        with self.feed.feeding(gates.to(self.device), values):
            return self.model(x)

    def outputs(self, batch: Pair, gates: Tensor, values: Tensor, train: bool) -> StnOutputs:
        """The outputs of a batch with its gates; ``train``: augmentations and dropout at each example's values."""
        x = batch[0]
        if train:
            values = values.to(self.device)
            if self.regularisers.augments:
                x = self.regularisers.augment(x, values, self.noise)
        return StnOutputs(self.forward(x, gates, values if train else None), gates)

    def criterion(self, out: StnOutputs, batch: Pair, values: Tensor, train: bool) -> Tensor:
        """The task's loss; ``train``: plus each example's penalties (at the gates of ``out``) and loss terms."""
        targets = batch[1]
        loss = self.task.loss(out.prediction, targets)
        if not train:
            return loss
        gates = out.gates.to(self.device)
        return self.regularisers.training_loss(
            loss, out.prediction, targets, values.to(self.device), self.penalties, gates
        )

    def loss(self, batch: Pair, gates: Tensor, values: Tensor, train: bool) -> Tensor:
        """Mean loss of the batch (see :meth:`outputs` and :meth:`criterion`)."""
        return self.criterion(self.outputs(batch, gates, values, train), batch, values, train)

    def evaluate(self, split: str, gates: GateFn) -> dict[str, float]:
        """The task's loss and metrics over a whole split at the unperturbed λ."""
        return self.task.evaluate(self.model, split, lambda x: self.forward(x, gates(x.shape[0])[0], None))

    # --- the task's optimisation rules -------------------------------------------------------------------------
    def weight_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The task's optimizer (default Adam)."""
        return self.task.weight_optimizer(params, lr)

    def clip_gradients(self, params: list[nn.Parameter]) -> None:
        """The task's gradient clipping."""
        self.task.clip_gradients(params)

    def on_epoch_end(self, optimizer: torch.optim.Optimizer, epoch: int, val_loss: float) -> None:
        """The task's learning-rate rule."""
        self.rule.step(optimizer, val_loss)

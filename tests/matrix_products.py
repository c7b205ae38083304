"""A test helper: a dispatch mode that records the shape of every matrix product's result (a weight-gradient
product has its weight's shape)."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class MatrixProducts(TorchDispatchMode):
    """Records the shape of the result of every ``mm`` and ``addmm`` dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.shapes.append(tuple(out.shape))
        return out

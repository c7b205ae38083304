"""The random streams of a run: what differs between methods, and what every method shares.

A run's seed feeds two kinds of streams.

- **The method's own** (its random start, its sampler's draws, a scheduler's perturbations): :func:`method_seed`
  derives them from the run's seed *and the method's name*, so two methods at one seed never share a random initial
  design by accident (TPE and Optuna's GP would otherwise draw the same random start), while one method at one seed
  repeats itself exactly. The name is hashed with CRC-32, which is the same in every process (Python's ``hash`` of a
  string is salted per process).
- **The trials'** (data order, weight initialisation, dropout masks): trial ``k`` of a run trains with
  :func:`~hpobench_stn.trial_runner.trial_seed` ``(seed, k)``, the same for every method, and STN trains with the run's
  seed itself. These are common random numbers: at one seed the k-th trial of every black-box method sees the same
  minibatch order and initial weights, so a difference between two methods' trials comes from their configurations,
  not from the luck of the draw.
"""

from __future__ import annotations

import zlib

import numpy as np


def method_seed(seed: int, method: str, *stream: int) -> int:
    """The seed of method ``method``'s random stream at run seed ``seed`` (``stream``: further integers that name
    one of several streams, e.g. a trial id); a 32-bit integer, stable across processes and platforms."""
    entropy = [int(seed), zlib.crc32(method.encode("utf-8")), *map(int, stream)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])

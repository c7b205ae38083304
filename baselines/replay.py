"""Schedule replay: the paper's ablation of fixed values against schedules.

Trains a fixed-configuration model from scratch through the black-box door while following a hyperparameter
schedule stored by an earlier run (STN's, or PBT's): before each epoch the trial's configuration is set to the
schedule's value at the same fraction of training (a step function over the source run's reports), so a schedule
recorded over a longer STN training is stretched or compressed onto this trial's epochs. ``mode="final"`` trains at
the schedule's last value and ``mode="best"`` at the value of the source run's best checkpoint, held fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpobench_stn.errors import UserError
from hpobench_stn.optimizer import Method
from hpobench_stn.settings import MethodSettings, setting
from hpobench_stn.space import Config, SearchSpace
from hpobench_stn.status import TrialStatus
from hpobench_stn.store import METADATA, SUMMARY, read_events
from hpobench_stn.task import Trial
from hpobench_stn.trial_runner import run_trial, trial_seed

MODES = ("schedule", "final", "best")


def load_schedule(run: str | Path, space: SearchSpace) -> tuple[dict[str, Any], list[Config], Config]:
    """(source metadata, the configuration in force during each source epoch, best-checkpoint configuration).

    During source epoch 1 the initial values were in force (the ``trial_start`` configuration); during epoch
    k > 1, the values reported at the end of epoch k − 1.
    """
    path = Path(run)
    if not (path / METADATA).exists():
        raise UserError(f"no run folder at {run} (no {METADATA}); pass a run folder to --schedule")
    meta = json.loads((path / METADATA).read_text())
    events = read_events(path)
    reports = [ev for ev in events if ev.get("event") == "report" and ev.get("hparams") and ev.get("trial") == 0]
    start = next((ev for ev in events if ev.get("event") == "trial_start" and ev.get("trial") == 0), None)
    if not reports or start is None:
        raise UserError(f"run {run} stored no hyperparameter schedule (no report carries hparams)")

    def config(values: dict[str, Any]) -> Config:
        return space.validate({k: v for k, v in values.items() if k in space.names})

    schedule = [config(start["config"])] + [config(ev["hparams"]) for ev in reports[:-1]]
    final = config(reports[-1]["hparams"])
    best = final
    if (path / SUMMARY).exists():
        incumbent = json.loads((path / SUMMARY).read_text()).get("incumbent") or {}
        if incumbent.get("hparams"):
            best = config(incumbent["hparams"])
    return meta, [*schedule, final], best


@dataclass(frozen=True)
class ReplaySettings(MethodSettings):
    """The source run, what of its schedule to follow, and how long and how often to train."""

    schedule: str | None = setting(None, help="the source run folder (--schedule RUN)")
    mode: str = setting("schedule", choices=MODES, help="follow the schedule, or hold its final or best value")
    epochs: int | None = setting(None, low=1, help="epochs per trial (default: the task's trial length)")
    repeats: int = setting(1, low=1, help="trainings, each with its own seed")


class ScheduleReplay(Method):
    """Fixed-configuration training that follows (or freezes) a stored schedule; one trial per ``repeats``."""

    name = "replay"
    description = "replay a stored STN/PBT schedule with fixed-configuration training (mode schedule|final|best)"
    Settings = ReplaySettings
    options: ReplaySettings

    def __init__(self, space: SearchSpace, seed: int, max_epochs: int, **settings: Any) -> None:
        super().__init__(space, seed, max_epochs, **settings)
        if self.options.schedule is None:
            raise UserError("method 'replay' needs the source run: --schedule RUN_FOLDER")
        self.mode = self.options.mode
        self.epochs = self.options.epochs or max_epochs
        # schedule: the values in force during each source epoch, then the final values
        self.meta, self.schedule, self.best = load_schedule(self.options.schedule, space)

    def settings(self) -> dict[str, Any]:
        """Source run, mode, epochs and repeats, and the source's method and seed."""
        return {
            **super().settings(),
            "epochs": self.epochs,
            "source_method": self.meta.get("method"),
            "source_seed": self.meta.get("seed"),
        }

    def config_for_epoch(self, epoch: int) -> Config:
        """The configuration for 0-based ``epoch`` of this trial."""
        if self.mode == "final":
            return self.schedule[-1]
        if self.mode == "best":
            return self.best
        during = self.schedule[:-1]  # the values in force during each source epoch
        return during[min(len(during) - 1, epoch * len(during) // self.epochs)]

    def check_task(self, task: Any) -> None:
        """The schedule must come from this task, preset and task settings (the same problem instance)."""
        if self.meta.get("task") != task.name or self.meta.get("preset") != task.preset.name:
            raise UserError(
                f"the schedule comes from task {self.meta.get('task')!r} preset {self.meta.get('preset')!r}; "
                f"replay it on that task and preset"
            )
        source = (self.meta.get("task_description") or {}).get("settings")
        if source is not None and source != dict(task.preset.settings):
            differ = sorted(
                k for k in set(source) | set(task.preset.settings) if source.get(k) != task.preset.settings.get(k)
            )
            given = ", ".join(f"{k}={source.get(k)!r}" for k in differ)
            raise UserError(
                f"the schedule comes from another instance of the task ({given}); replay it with --task-arg {given}"
            )

    def run(self, ctx: Any) -> None:
        """Train ``repeats`` fresh models following the schedule, reporting every epoch."""
        for trial_id in range(self.options.repeats):

            def follow(trial: Trial) -> None:
                trial.set_config(self.config_for_epoch(trial.epoch))

            config = self.config_for_epoch(0)
            seed = trial_seed(ctx.seed, trial_id)
            outcome = run_trial(ctx, trial_id, config, seed, self.epochs, before_epoch=follow, schedule=True)
            if outcome.status == TrialStatus.CUT:
                return

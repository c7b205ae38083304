"""The CIFAR-10 tasks: data and checksums, batched augmentation against torchvision, models (plain = STN at zero
gates), the search space, black-box trials, the STN door, signatures, and smoke runs through the harness."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.errors import DataError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.stn.hyper import HyperState
from hpobench_stn.store import read_events
from tasks.cifar import augment as A
from tasks.cifar.data import (
    DATA_FILES,
    FOLDER,
    OFFICIAL_MD5,
    SLICE_PATH,
    load_full,
    load_slice,
    make_slice,
    normalise,
    verify_file,
)
from tasks.cifar.model import VGG16, AlexNet, build_model, copy_elementary_from, count_parameters, dropout
from tasks.cifar.task import DROPOUTS, CifarTask, CifarVggTask, alexnet_space, apply_lr_rule, vgg_space

SHARED = Path(os.environ.get("HPOBENCH_STN_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
FULL = SHARED / FOLDER
needs_full = pytest.mark.skipif(not (FULL / "test_batch").exists(), reason=f"full CIFAR-10 not in {FULL}")
SIGNATURES = {
    task: json.loads((Path(__file__).parent / "signatures" / f"{task}.json").read_text())
    for task in ("cifar", "cifar-vgg")
}
TASKS = {"cifar": CifarTask, "cifar-vgg": CifarVggTask}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for this module: the tiny networks gain nothing from more, and on a shared CPU two
    spinning OpenMP threads made these tests about 20x slower (264 s against 11 s). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n=16):
    """Real images from the shipped slice as floats in [0, 1], a few with grey and two-way-tied pixels."""
    x = load_slice().train_x[:n].float() / 255
    x[0, :, :4, :4] = 0.5  # grey: hue undefined, chroma 0
    x[1, 0, :4, :4], x[1, 1, :4, :4], x[1, 2, :4, :4] = 0.8, 0.8, 0.1  # red and green tie for the maximum
    return x


# --- data -------------------------------------------------------------------------------------------------------
def test_slice_split_sizes_class_balance_and_layout():
    s = load_slice()
    for split, n in (("train", 400), ("val", 200), ("test", 200)):
        x, y = s.split(split)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.bincount(y, minlength=10).tolist() == [n // 10] * 10
    assert SLICE_PATH.stat().st_size < 5_000_000
    # the first training image of the slice is CIFAR-10's first training image (README reference values)
    assert s.train_y[0] == 6 and s.train_x[0, 0, 0, :10].tolist() == [59, 43, 50, 68, 98, 119, 139, 145, 149, 149]
    with np.load(SLICE_PATH) as z:
        assert z["val_index"].max() < 10_000 and z["train_index"].max() < 10_000  # from data_batch_1 and _5


@needs_full
def test_full_split_sizes_and_class_balance():
    s = load_full(SHARED)
    assert s.train_x.shape == (40_000, 3, 32, 32) and s.val_x.shape == (10_000, 3, 32, 32)
    assert s.test_x.shape == (10_000, 3, 32, 32) and s.train_x.dtype == torch.uint8
    everything = torch.cat([s.train_y, s.val_y])
    assert torch.bincount(everything).tolist() == [5000] * 10
    assert torch.bincount(s.test_y).tolist() == [1000] * 10
    # validation = the last 10,000 training images = data_batch_5 (its class counts, from the data README)
    assert torch.bincount(s.val_y).tolist() == [1014, 1014, 952, 1016, 997, 1025, 980, 977, 1003, 1022]
    assert s.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert s.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert s.test_x[0, 0, 0, :10].tolist() == [158, 159, 165, 166, 160, 156, 162, 159, 158, 159]
    # the folder itself or its parent are both accepted
    assert torch.equal(load_full(FULL).val_y, s.val_y)


@needs_full
def test_shipped_slice_is_cut_from_the_full_data(tmp_path):
    fresh = make_slice(SHARED, tmp_path / "slice.npz")
    with np.load(fresh) as a, np.load(SLICE_PATH) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert np.array_equal(a[key], b[key]), key


def test_checksum_failure_names_the_file(tmp_path):
    for name in DATA_FILES:
        (tmp_path / name).write_bytes(b"not a CIFAR-10 batch " + name.encode())
    with pytest.raises(DataError, match=r"data_batch_1.*corrupt.*--download"):
        load_full(tmp_path)
    with pytest.raises(DataError, match="test_batch"):
        verify_file(tmp_path / "test_batch")


@needs_full
def test_checksum_failure_names_the_corrupt_file_among_good_ones(tmp_path):
    folder = tmp_path / FOLDER
    folder.mkdir()
    for name in DATA_FILES:
        (folder / name).symlink_to(FULL / name)
    (folder / "data_batch_4").unlink()
    data = bytearray((FULL / "data_batch_4").read_bytes())
    data[-1000] ^= 0xFF  # one flipped byte in the pixels
    (folder / "data_batch_4").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"data_batch_4.*corrupt"):
        load_full(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"no CIFAR-10 batch files.*--download"):
        load_full(tmp_path)
    with pytest.raises(DataError, match=r"needs the full CIFAR-10.*--data-dir"):
        load_full(None)
    (tmp_path / "data_batch_1").write_bytes(b"x")
    with pytest.raises(DataError, match=r"missing CIFAR-10 file .*data_batch_2"):
        load_full(tmp_path)
    with pytest.raises(DataError, match="--download"):
        _ = CifarTask("cpu", data_dir=tmp_path).train_size


def test_official_md5s_are_the_ones_torchvision_checks():
    cifar = torchvision.datasets.CIFAR10
    official = {name: md5 for name, md5 in cifar.train_list + cifar.test_list}
    official[cifar.meta["filename"]] = cifar.meta["md5"]
    assert official == OFFICIAL_MD5


def test_normalise_matches_torchvision():
    x = load_slice().val_x[:8]
    mean, std = (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)
    expected = TF.normalize(x.float() / 255, mean, std)
    assert torch.allclose(normalise(x), expected, atol=1e-5)


# --- augmentation against torchvision ----------------------------------------------------------------------------
JITTER_OPS = {
    "brightness": (A.adjust_brightness, TF.adjust_brightness, 1.0, (0.0, 2.0)),
    "contrast": (A.adjust_contrast, TF.adjust_contrast, 1.0, (0.0, 2.0)),
    "saturation": (A.adjust_saturation, TF.adjust_saturation, 1.0, (0.0, 2.0)),
    "hue": (A.adjust_hue, TF.adjust_hue, 0.0, (-0.5, 0.5)),
}


@pytest.mark.parametrize("name", sorted(JITTER_OPS))
def test_colour_jitter_identity_and_torchvision_match(name):
    ours, theirs, neutral, (low, high) = JITTER_OPS[name]
    x = _images()
    assert torch.allclose(ours(x, torch.full((16,), neutral)), x, atol=1e-6)
    g = torch.Generator().manual_seed(1)
    params = low + (high - low) * torch.rand(16, generator=g)
    expected = torch.stack([theirs(x[i], float(params[i])) for i in range(16)])
    assert torch.allclose(ours(x, params), expected, atol=1e-5)


def _hole_box(y, x, length, size=32):
    y1, y2 = int(min(max(y - length / 2, 0), size)), int(min(max(y + length / 2, 0), size))
    x1, x2 = int(min(max(x - length / 2, 0), size)), int(min(max(x + length / 2, 0), size))
    return y1, x1, y2 - y1, x2 - x1


def test_cutout_identity_and_torchvision_erase_match():
    x = _images()
    g = torch.Generator().manual_seed(2)
    centres = torch.randint(0, 32, (16, 4, 2), generator=g)
    lengths = torch.randint(0, 25, (16,), generator=g)
    holes = torch.randint(0, 5, (16,), generator=g)
    assert torch.equal(A.cutout(x, torch.zeros(16), holes, centres), x)
    assert torch.equal(A.cutout(x, lengths, torch.zeros(16), centres), x)
    expected = x.clone()
    for i in range(16):
        for k in range(int(holes[i])):
            i0, j0, h, w = _hole_box(int(centres[i, k, 0]), int(centres[i, k, 1]), int(lengths[i]))
            expected[i] = TF.erase(expected[i], i0, j0, h, w, torch.tensor(0.0))
    assert torch.equal(A.cutout(x, lengths, holes, centres), expected)
    assert (A.cutout(x, lengths, holes, centres) != x).any()


def test_affine_identity_and_torchvision_match():
    x = _images()
    zero = torch.zeros(16)
    assert torch.allclose(A.affine(x, zero, torch.zeros(16, 2), torch.ones(16), zero), x, atol=1e-6)
    g = torch.Generator().manual_seed(3)
    angle = 60 * torch.rand(16, generator=g) - 30
    shift = 10 * torch.rand(16, 2, generator=g) - 5
    scale = 0.6 + 0.8 * torch.rand(16, generator=g)
    shear = 50 * torch.rand(16, 2, generator=g) - 25
    expected = torch.stack(
        [
            TF.affine(
                x[i],
                angle=float(angle[i]),
                translate=shift[i].tolist(),
                scale=float(scale[i]),
                shear=shear[i].tolist(),
                interpolation=TF.InterpolationMode.BILINEAR,
            )
            for i in range(16)
        ]
    )
    assert torch.allclose(A.affine(x, angle, shift, scale, shear), expected, atol=1e-5)


def test_pixel_dropout_and_input_scaling():
    x = _images().add_(0.1)  # no zero pixels before dropout
    g = torch.Generator().manual_seed(4)
    assert torch.equal(A.pixel_dropout(x, torch.zeros(16), g), x)
    assert torch.equal(A.input_scaling(x, torch.zeros(16), g), x)
    rate = torch.linspace(0.0, 0.9, 16)
    out = A.pixel_dropout(x, rate, g)
    dropped = (out == 0).float().mean(dim=(1, 2, 3))
    assert torch.allclose(dropped, rate, atol=0.02)
    kept = out != 0
    assert torch.allclose(out[kept], (x / (1 - rate).view(-1, 1, 1, 1)).expand_as(x)[kept])
    s = torch.full((16,), 0.3)
    ratio = (A.input_scaling(x, s, g) / x).flatten(1)
    assert torch.allclose(ratio.min(1).values, ratio.max(1).values)  # one factor per image
    factors = ratio[:, 0]
    assert (factors >= 1 / 1.3 - 1e-6).all() and (factors <= 1.3 + 1e-6).all() and factors.unique().numel() == 16


AUG_NAMES = vgg_space().names


@pytest.mark.parametrize(
    "name", ["brightness", "contrast", "saturation", "hue", "rotation", "translate", "scale", "shear", "input_scale"]
)
def test_augmenter_draws_per_example_parameters(name):
    same = load_slice().train_x[:1].expand(32, -1, -1, -1).contiguous()  # one image, 32 times
    augment = A.Augmenter(AUG_NAMES)
    baseline = normalise(same)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(augment(same, {name: 0.0}, g), baseline)  # strength 0 is the identity
    out = augment(same, {name: 0.3}, g)
    flat = out.flatten(1)
    assert not torch.allclose(flat[0], baseline[0].flatten())
    assert torch.unique(flat, dim=0).shape[0] == 32  # every example got its own parameter
    # STN: one strength per example; an example at strength 0 is left alone, the others are not
    values = torch.zeros(32, len(AUG_NAMES))
    values[1:, AUG_NAMES.index(name)] = 0.3
    out = augment(same, values, g)
    assert torch.allclose(out[0], baseline[0], atol=1e-5) and not torch.allclose(out[1], baseline[1], atol=1e-3)


def test_augmenter_cutout_dropout_per_example_and_reproducible():
    x = load_slice().train_x[:32]
    augment = A.Augmenter(AUG_NAMES)
    config = {"cutout_length": 8, "cutout_holes": 2, "input_dropout": 0.2, "hue": 0.1}
    first = augment(x, config, torch.Generator().manual_seed(6))
    again = augment(x, config, torch.Generator().manual_seed(6))
    assert torch.equal(first, again)
    assert not torch.equal(first, augment(x, config, torch.Generator().manual_seed(7)))
    zero_maps = (first == 0).all(dim=1)  # cutout zeroes all channels of a pixel
    holes = zero_maps.sum(dim=(1, 2))
    assert (holes > 0).all() and holes.unique().numel() > 1  # hole positions differ per example
    values = torch.zeros(32, len(AUG_NAMES))
    values[:, AUG_NAMES.index("cutout_length")] = torch.arange(32) % 25
    values[:, AUG_NAMES.index("cutout_holes")] = 1
    out = augment(x, values, torch.Generator().manual_seed(8))
    assert torch.allclose(out[0], normalise(x[:1])[0], atol=1e-5)  # length 0: nothing cut (hue at 0: rounding)
    has_hole = (out == 0).all(dim=1).flatten(1).any(1)
    assert torch.equal(has_hole, torch.arange(32) % 25 > 0)  # a hole wherever the length is positive


def test_dropout_per_example_rates():
    x = torch.ones(64, 2000)
    g = torch.Generator().manual_seed(9)
    rates = torch.linspace(0.0, 0.9, 64)
    out = dropout(x, rates, g)
    assert torch.equal(out[0], x[0])
    assert torch.allclose((out == 0).float().mean(1), rates, atol=0.05)  # 4.5 standard deviations
    maps = dropout(torch.ones(64, 8, 4, 4), torch.full((64,), 0.5), g)
    per_channel = maps.flatten(2)
    assert torch.equal(per_channel.min(2).values, per_channel.max(2).values)  # whole channels dropped
    assert torch.equal(dropout(x, 0.0, g), x)


# --- search space --------------------------------------------------------------------------------------------------
def test_search_spaces_ranges_and_initial_values():
    space = alexnet_space()
    assert len(space) == 15 and set(DROPOUTS) <= set(space.names)
    init = space.default()
    assert all(init[n] == pytest.approx(0.05) for n in (*DROPOUTS, "input_dropout", "hue", "contrast"))
    assert init["cutout_length"] == 4 and init["cutout_holes"] == 1
    assert (space["hue"].low, space["hue"].high) == (0.0, 0.5)
    assert (space["cutout_length"].low, space["cutout_length"].high) == (0, 24)
    assert all(space[n].high == 0.9 for n in DROPOUTS)
    vgg = vgg_space()
    assert vgg.names[:15] == space.names and len(vgg) == 19
    assert vgg.default()["rotation"] == 5.0


def test_discrete_hyperparameters_are_integers_in_range():
    space = alexnet_space()
    rng = np.random.default_rng(0)
    for _ in range(200):
        config = space.sample(rng)
        for name, hi in (("cutout_length", 24), ("cutout_holes", 4)):
            assert isinstance(config[name], int) and 0 <= config[name] <= hi
    hyper = HyperState(space)
    u = torch.randn(500, len(space)) * 4
    values = hyper.task_values(u)
    for name, hi in (("cutout_length", 24), ("cutout_holes", 4)):
        col = values[:, space.names.index(name)]
        assert torch.equal(col, col.floor()) and col.min() >= 0 and col.max() <= hi
        assert col.unique().numel() > 3
    current = hyper.current()
    assert current["cutout_length"] == 4 and current["cutout_holes"] == 1


# --- models ---------------------------------------------------------------------------------------------------------
def test_alexnet_paper_architecture():
    net = AlexNet()
    convs = [m for m in net.convs]
    assert [c.out_channels for c in convs] == [64, 192, 384, 256, 256]
    assert [c.stride[0] for c in convs] == [2, 1, 1, 1, 1]
    assert net.flat == 1024 and net.fc1.out_features == 4096 and net.fc2.out_features == 4096
    expected = sum(9 * i * o + o for i, o in zip([3, 64, 192, 384, 256], [64, 192, 384, 256, 256], strict=True))
    expected += 1024 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    assert count_parameters(net) == expected
    vgg = VGG16()
    assert sum(len(b) for b in vgg.blocks) == 13 and vgg.flat == 512
    assert vgg(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", ["alexnet", "vgg16"])
@pytest.mark.parametrize("zero", ["gate_map", "gate_inputs"])
def test_fixed_and_stn_models_agree_when_the_gates_are_zero(name, zero):
    kwargs = {"width": 0.125, "fc": 32}
    plain = build_model(name, seed=0, **kwargs)
    stn = build_model(name, n_hparams=15, seed=1, gate_init="zero" if zero == "gate_map" else "normal", **kwargs)
    copy_elementary_from(stn, plain)
    x = normalise(load_slice().train_x[:8])
    gates = torch.randn(8, 15) if zero == "gate_map" else torch.zeros(8, 15)
    plain.eval(), stn.eval()
    assert torch.equal(stn(x, gates), plain(x))
    plain.train(), stn.train()
    rates = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.4]
    out_plain = plain(x, None, rates, torch.Generator().manual_seed(3))
    per_example = torch.tensor(rates).expand(8, -1)
    out_stn = stn(x, gates, per_example, torch.Generator().manual_seed(3))
    assert torch.equal(out_stn, out_plain)
    # and the gates do matter once they are not zero
    stn.eval()
    with torch.no_grad():
        for m in stn.modules():
            if hasattr(m, "gate"):
                m.gate.weight.normal_(0, 0.5)
    assert not torch.allclose(stn(x, torch.randn(8, 15)), plain.eval()(x))


# --- black-box door --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_name", ["cifar", "cifar-vgg"])
def test_tiny_trial_reports_metrics_and_is_reproducible(task_name):
    task = TASKS[task_name]("tiny")
    config = task.space.default()
    first = task.train(config, seed=3)
    assert first.status == "completed" and first.epochs_trained == task.max_epochs
    assert set(first.test_metrics) == {"loss", "accuracy"} and set(first.val_metrics) == {"accuracy"}
    assert all(math.isfinite(r.val_loss) and 0 <= r.metrics["accuracy"] <= 1 for r in first.reports)
    assert first.cost_epochs == pytest.approx(task.max_epochs)
    again = task.train(config, seed=3)
    assert [r.val_loss for r in again.reports] == [r.val_loss for r in first.reports]


def test_checkpoint_restore_continues_exactly():
    task = CifarTask("tiny")
    config = task.space.from_unit([0.3] * len(task.space))
    meter = BudgetMeter(Budget(epochs=100), task.train_size)
    straight = task.make_trial(config, seed=4)
    losses = [straight.train_epoch(meter).val_loss for _ in range(3)]
    first = task.make_trial(config, seed=4)
    first.train_epoch(meter)
    second = task.make_trial(config, seed=99)
    second.load_state_dict(first.state_dict())
    assert [second.train_epoch(meter).val_loss for _ in range(2)] == losses[1:]
    assert second.test_metrics() == straight.test_metrics()


def test_learning_rate_rule_is_the_reference_non_monotonic_decay():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    history: list[float] = []
    for loss in (3.0, 2.0, 1.5, 1.8, 1.4):  # nonmono 2: at 1.8 the best before the window (2.0 at [0:2]) is 2.0
        apply_lr_rule(opt, history, loss, nonmono=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    apply_lr_rule(opt, history, 2.5, nonmono=2)  # worse than 1.5, the best of history[:-2]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_presets():
    paper = CifarTask.presets["paper"].settings
    assert (paper["width"], paper["fc"], paper["batch_size"], paper["lr"], paper["momentum"]) == (
        1.0,
        4096,
        128,
        0.01,
        0.9,
    )
    assert CifarVggTask.presets["paper"].settings["fc"] == 512
    assert CifarTask("tiny").train_size == 400


@pytest.mark.parametrize("task_name", ["cifar", "cifar-vgg"])
@pytest.mark.parametrize(
    "preset",
    [
        "tiny",
        pytest.param("cpu", marks=[needs_full, pytest.mark.slow]),
        pytest.param("paper", marks=[needs_full, pytest.mark.slow]),
    ],
)
def test_signature_has_not_drifted(task_name, preset):
    task = TASKS[task_name](preset, data_dir=SHARED if preset != "tiny" else None)
    assert task.signature() == pytest.approx(SIGNATURES[task_name][preset], rel=1e-4)


# --- white-box door and harness smoke runs --------------------------------------------------------------------------
def test_stn_problem_losses_and_hypergradient():
    task = CifarTask("tiny")
    torch.manual_seed(0)
    problem = task.stn_problem(seed=0)
    hyper = HyperState(task.space)
    batch = next(problem.train_batches(torch.Generator().manual_seed(0)))
    u = hyper.sample(problem.batch_size(batch), torch.Generator().manual_seed(1))
    problem.model.train()
    loss = problem.loss(batch, u, hyper.task_values(u).detach(), train=True)
    assert math.isfinite(float(loss.detach()))
    problem.model.eval()
    val_loss = problem.loss(batch, hyper.centre(problem.batch_size(batch)), hyper.task_values(u), train=False)
    (grad,) = torch.autograd.grad(val_loss, hyper.u)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    opt = problem.weight_optimizer(list(problem.model.parameters()), 0.01)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9


@pytest.mark.parametrize("task_name", ["cifar", "cifar-vgg"])
def test_harness_smoke_random_and_stn(tmp_path, task_name):
    random_summary = execute(RunSpec(task_name, "random", seed=0, budget="3ep", out=tmp_path), progress=False)
    assert random_summary["status"] == "completed" and random_summary["trials"] == 1
    assert set(random_summary["incumbent"]["test_metrics"]) == {"loss", "accuracy"}
    spec = RunSpec(task_name, "stn", seed=0, budget="20ep", out=tmp_path, method_args={"epochs": 2})
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["incumbent"] is not None, summary
    assert summary["test_loss"] is not None and math.isfinite(summary["test_loss"])
    names = TASKS[task_name]("tiny").space.names
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert len(reports) == 2
    for event in reports:
        assert set(names) <= set(event["hparams"]) and all(f"sigma.{n}" in event["hparams"] for n in names)
        assert isinstance(event["hparams"]["cutout_length"], int) and 0 <= event["hparams"]["cutout_holes"] <= 4
    settings = next(e for e in read_events(spec.path) if e["event"] == "stn_settings")["settings"]
    assert settings["lr"] == 0.05 and settings["hyper_lr"] == 3e-3 and settings["sigma_init"] == 0.5
    assert settings["warmup_steps"] == 8  # one epoch of the tiny preset: 400 images in batches of 50
    # the hyperparameters moved after the warm-up: the second epoch's schedule differs from the first's
    first, second = reports[0]["hparams"], reports[1]["hparams"]
    assert any(first[n] != second[n] for n in names)


def test_vgg_augmenter_uses_affine():
    task = CifarVggTask("tiny")
    x = task.data.train_x[:4]
    config = dict.fromkeys(task.space.names, 0.0) | {"rotation": 30.0}
    out = task.augmenter(x, config, torch.Generator().manual_seed(0))
    assert not torch.allclose(out, normalise(x), atol=1e-3)
    assert torch.equal(task.augmenter(x, dict.fromkeys(task.space.names, 0.0)), normalise(x))

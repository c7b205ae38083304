"""The PTB task: data (checksums, counts, slice, errors), the seven regularisers, fixed vs STN model, both doors."""

import contextlib
import gzip
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from matrix_products import MatrixProducts

from hpobench_stn.budget import Budget, BudgetMeter
from hpobench_stn.cli import main as cli_main
from hpobench_stn.errors import DataError
from hpobench_stn.harness import RunSpec, execute
from hpobench_stn.stn.layers import frozen
from hpobench_stn.stn.trainer import StnSettings, StnTrainer
from hpobench_stn.store import read_events
from tasks.ptb import data as ptb_data
from tasks.ptb.model import (
    ALPHA,
    BETA,
    DROPCONNECT,
    EMBEDDING,
    HIDDEN,
    HPARAMS,
    INPUT,
    OUTPUT,
    PtbLanguageModel,
    lm_loss,
    locked_dropout,
)
from tasks.ptb.task import NonMonotonicDecay, PtbTask

SIGNATURES = json.loads((Path(__file__).parent / "signatures" / "ptb.json").read_text())


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("HPOBENCH_STN_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if candidate and all(ptb_data.find_split_file(Path(candidate), s) for s in ptb_data.SPLITS):
            return Path(candidate)
    return None


FULL = _shared_data()
needs_full = pytest.mark.skipif(FULL is None, reason="full PTB data not found (set HPOBENCH_STN_DATA)")


@pytest.fixture(autouse=True)
def _one_thread():
    """These small models gain nothing from a second thread, and on a shared 2-core machine an OpenMP thread that
    loses its core stalls every kernel (measured under load: the tiny signature 4.5 s on 1 thread, 75 s on 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- data ---------------------------------------------------------------------------------------------------------
@needs_full
def test_full_data_checksums_and_token_counts():
    corpus = ptb_data.load_full(FULL)
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (929_589, 73_760, 82_430)
    assert len(corpus.vocab) == 10_000 and corpus.unknown == {"train": 0, "valid": 0, "test": 0}
    assert "<eos>" in corpus.vocab and "<unk>" in corpus.vocab
    for split, facts in ptb_data.FULL_FACTS.items():
        path = ptb_data.find_split_file(FULL, split)
        raw = path.read_bytes()
        text = gzip.decompress(raw) if path.suffix == ".gz" else raw
        assert hashlib.md5(text).hexdigest() == facts.txt_md5  # torchtext's reference md5
        assert hashlib.sha256(text).hexdigest() == facts.txt_sha256
        assert text.count(b"\n") == facts.lines
        assert len(ptb_data.tokenize(text.decode())) == facts.tokens


@needs_full
def test_plain_text_files_in_either_layout_and_the_environment_variable(tmp_path, monkeypatch):
    for split in ptb_data.SPLITS:  # <dir>/ptb.<split>.txt, uncompressed
        text = ptb_data.read_verified(ptb_data.find_split_file(FULL, split), ptb_data.FULL_FACTS[split])
        (tmp_path / f"ptb.{split}.txt").write_text(text)
    plain = ptb_data.load_full(tmp_path)
    reference = ptb_data.load_full(FULL)
    assert plain.vocab == reference.vocab and torch.equal(plain.test, reference.test)
    monkeypatch.setenv(ptb_data.DATA_DIR_ENV, str(tmp_path))
    task = PtbTask("cpu")  # no data_dir: the environment variable
    assert "full PTB" in task.corpus.source and str(tmp_path) in task.corpus.source
    monkeypatch.delenv(ptb_data.DATA_DIR_ENV)
    monkeypatch.setattr(ptb_data, "DEFAULT_DOWNLOAD_DIR", tmp_path)  # neither: an earlier download's folder
    assert ptb_data.locate_full(None)["valid"] == tmp_path / "ptb.valid.txt"


@needs_full
def test_the_shipped_slice_is_the_documented_cut_of_the_full_data(tmp_path):
    written = ptb_data.write_slice(FULL, tmp_path)
    for split, path in written.items():
        shipped = gzip.decompress(ptb_data.slice_paths()[split].read_bytes())
        assert gzip.decompress(path.read_bytes()) == shipped


def test_slice_loads_with_its_own_vocabulary():
    corpus = ptb_data.load_slice()
    counts = (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel())
    assert counts == tuple(ptb_data.SLICE_FACTS[s].tokens for s in ptb_data.SPLITS)
    assert len(corpus.vocab) == 6_786 and corpus.vocab[int(corpus.train[0])] == "aer"
    assert corpus.unknown["train"] == 0 and corpus.unknown["valid"] > 0  # unseen words became <unk>
    assert int(corpus.train.max()) < len(corpus.vocab) and int(corpus.valid.min()) >= 0
    size = sum(p.stat().st_size for p in ptb_data.slice_paths().values())
    assert 100_000 < size < 5_000_000


def _copy_slice_as_full(folder: Path) -> None:
    (folder / "ptb").mkdir(parents=True)
    for split, path in ptb_data.slice_paths().items():
        shutil.copy(path, folder / "ptb" / f"ptb.{split}.txt.gz")


def test_missing_data_file_names_the_file_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ptb_data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(ptb_data, "DEFAULT_DOWNLOAD_DIR", tmp_path / "no-download-here")
    with pytest.raises(DataError, match=r"ptb\.train\.txt.*--download"):
        PtbTask("cpu", data_dir=tmp_path)
    _copy_slice_as_full(tmp_path)
    (tmp_path / "ptb" / "ptb.valid.txt.gz").unlink()
    with pytest.raises(DataError, match=r"ptb\.valid\.txt not found.*--data-dir"):
        ptb_data.locate_full(tmp_path)
    with pytest.raises(DataError, match="no data folder given"):
        PtbTask("paper")


def test_corrupt_data_file_names_the_file(tmp_path):
    _copy_slice_as_full(tmp_path)  # real PTB text, but not the full splits: every checksum fails
    with pytest.raises(DataError, match=r"ptb\.train\.txt\.gz is corrupt"):
        ptb_data.load_full(tmp_path)
    (tmp_path / "ptb" / "ptb.train.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"ptb\.train\.txt\.gz is not a valid gzip file"):
        ptb_data.load_full(tmp_path)


def test_cli_reports_missing_data_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ptb_data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(ptb_data, "DEFAULT_DOWNLOAD_DIR", tmp_path / "no-download-here")
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli_main(
        [
            *("run", "--task", "ptb", "--method", "random", "--preset", "cpu", "--budget", "1ep"),
            *("--data-dir", str(empty), "--out", str(tmp_path / "runs"), "--quiet"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "ptb.train.txt" in err and "Traceback" not in err


def test_batchify_cuts_contiguous_columns():
    stream = ptb_data.batchify(torch.arange(23), 4)
    assert stream.shape == (5, 4)
    assert stream[:, 1].tolist() == [5, 6, 7, 8, 9]


# --- signatures -----------------------------------------------------------------------------------------------------
def _assert_signature(actual, expected):
    """Data facts exactly; losses to 1e-4 (other CPUs round float32 products differently, and SGD at lr 30
    amplifies that a little over the probe's windows)."""
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == (pytest.approx(value, rel=1e-4) if key.startswith("val_loss") else value), key


def test_tiny_signature_has_not_drifted():
    _assert_signature(PtbTask("tiny").signature(), SIGNATURES["tiny"])


@needs_full
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_full_data_signatures_have_not_drifted(preset):
    _assert_signature(PtbTask(preset, data_dir=FULL).signature(), SIGNATURES[preset])


# --- the regularisers -----------------------------------------------------------------------------------------------
V, E, H, T, B = 40, 12, 16, 6, 8


def _model(stn=False, seed=0, gate_init="normal"):
    torch.manual_seed(seed)
    return PtbLanguageModel(V, E, H, 2, stn=stn, gate_init=gate_init)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (T, B), generator=g), torch.randint(0, V, (T, B), generator=g)


def _values(**rates):
    values = torch.zeros(B, len(HPARAMS))
    for name, rate in rates.items():
        values[:, HPARAMS.index(name)] = torch.as_tensor(rate, dtype=torch.float32)
    return values


def _run(model, tokens, values, train, seed=1, gates=None):
    model.train(train)
    gates = torch.zeros(B, len(HPARAMS)) if model.stn and gates is None else gates
    return model(tokens, None, values, gates, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stn", [False, True])
def test_rates_of_zero_change_nothing_and_evaluation_mode_applies_none(stn):
    model = _model(stn)
    tokens, targets = _batch()
    reference = _run(model, tokens, _values(), train=False)
    off = _run(model, tokens, _values(), train=True)  # training mode, every regulariser at 0
    assert torch.equal(off.logits, reference.logits)
    assert torch.equal(lm_loss(off, targets, _values(), True), lm_loss(reference, targets, _values(), False))
    strong = _values(**dict.fromkeys(HPARAMS, 0.9))
    evaluated = _run(model, tokens, strong, train=False)
    assert torch.equal(evaluated.logits, reference.logits)
    assert torch.equal(lm_loss(evaluated, targets, strong, False), lm_loss(reference, targets, _values(), False))


@pytest.mark.parametrize("name", ["dropout_output", "dropout_input", "dropout_hidden", "dropout_embedding"])
def test_each_dropout_acts_alone(name):
    model = _model()
    tokens, _ = _batch()
    reference = _run(model, tokens, _values(), train=False).logits
    assert not torch.allclose(_run(model, tokens, _values(**{name: 0.5}), train=True).logits, reference)


def test_dropconnect_acts_on_the_recurrent_weights_only():
    model = _model()
    tokens, _ = _batch()
    values = _values(dropconnect=0.9)
    # from a zero state the first step never reads the recurrent weights: DropConnect cannot change it
    first = _run(model, tokens[:1], values, train=True).logits
    assert torch.equal(first, _run(model, tokens[:1], _values(), train=False).logits)
    later = _run(model, tokens, values, train=True).logits
    assert not torch.allclose(later[1:], _run(model, tokens, _values(), train=False).logits[1:])


def test_activation_penalties_add_exactly_their_terms():
    model = _model()
    tokens, targets = _batch()
    out = _run(model, tokens, _values(), train=True)
    plain = lm_loss(out, targets, _values(), train=True)
    ar = out.dropped.pow(2).mean()
    tar = (out.raw[1:] - out.raw[:-1]).pow(2).mean()
    with torch.no_grad():
        assert float(lm_loss(out, targets, _values(alpha=2.0), True)) == pytest.approx(float(plain + 2 * ar))
        assert float(lm_loss(out, targets, _values(beta=3.0), True)) == pytest.approx(float(plain + 3 * tar))
        assert float(lm_loss(out, targets, _values(alpha=2.0, beta=3.0), False)) == float(plain)


def test_per_example_rates_differ_per_example():
    model = _model()
    tokens, _ = _batch()
    rates = torch.tensor([0.0, 0.8] * (B // 2))
    for name in ("dropout_output", "dropout_input", "dropout_hidden"):
        out = _run(model, tokens, _values(**{name: rates}), train=True).logits
        reference = _run(model, tokens, _values(), train=False).logits
        assert torch.equal(out[:, 0::2], reference[:, 0::2])  # rate 0: these sequences are untouched
        assert not torch.allclose(out[:, 1::2], reference[:, 1::2])
    # one mask per sequence (constant over time), its drop fraction following the sequence's own rate
    x = torch.ones(5, 3, 20_000)
    dropped = locked_dropout(x, torch.tensor([0.1, 0.5, 0.9]), torch.Generator().manual_seed(0))
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))
    zero_fraction = (dropped[0] == 0).float().mean(dim=1)
    assert zero_fraction.tolist() == pytest.approx([0.1, 0.5, 0.9], abs=0.02)
    assert dropped[0, 2][dropped[0, 2] > 0].unique().tolist() == pytest.approx([10.0])  # kept units scaled 1/(1-p)


def test_word_dropout_drops_whole_word_types():
    model = _model()
    tokens = torch.randint(0, 6, (T, B), generator=torch.Generator().manual_seed(0))  # 6 types, many repeats
    seen = []
    model.rnns[0].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    factors = set()
    for seed in range(4):
        _run(model, tokens, _values(dropout_embedding=0.5), train=True, seed=seed)
        ratio = (seen[-1] / model.encoder(tokens)).detach()  # what reached the LSTM over the plain embedding
        for word in tokens.unique():
            per_word = ratio[tokens == word]  # every occurrence, every unit
            torch.testing.assert_close(per_word, torch.full_like(per_word, float(per_word[0, 0])))
            factors.add(round(float(per_word[0, 0]), 4))
    assert factors == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - 0.5)


def test_hyperparameter_indices_follow_the_space():
    assert PtbTask("tiny").space.names == list(HPARAMS)
    indices = (OUTPUT, INPUT, HIDDEN, EMBEDDING, DROPCONNECT, ALPHA, BETA)
    assert [HPARAMS[i] for i in indices] == [
        "dropout_output",
        "dropout_input",
        "dropout_hidden",
        "dropout_embedding",
        "dropconnect",
        "alpha",
        "beta",
    ]
    per_example = {hp.name for hp in PtbTask("tiny").space if hp.per_example}
    assert per_example == {"dropout_output", "dropout_input", "dropout_hidden"}
    assert all(hp.default == pytest.approx(0.05) for hp in PtbTask("tiny").space)


# --- one model, two doors -------------------------------------------------------------------------------------------
def _copy_fixed_into_stn(fixed, stn):
    with torch.no_grad():
        stn.encoder.weight_e.copy_(fixed.encoder.weight)
        for stn_rnn, rnn in zip(stn.rnns, fixed.rnns, strict=True):
            stn_rnn.load_elementary_from_lstm(rnn)
        stn.decoder.bias.copy_(fixed.decoder.bias)


@pytest.mark.parametrize("train", [False, True])
def test_fixed_and_stn_models_agree_when_the_gates_are_zero(train):
    fixed, stn = _model(seed=0), _model(stn=True, seed=1, gate_init="zero")
    _copy_fixed_into_stn(fixed, stn)
    assert stn.decoder.weight is stn.encoder.weight_e  # tied to the elementary embedding
    tokens, targets = _batch()
    values = _values(**dict.fromkeys(HPARAMS, 0.3))
    a = _run(fixed, tokens, values, train)
    b = _run(stn, tokens, values, train, gates=torch.randn(B, len(HPARAMS)))  # any λ: the gate maps are zero
    torch.testing.assert_close(b.logits, a.logits)  # float32 rounding (the STN LSTM is not the fused kernel)
    for (h1, c1), (h2, c2) in zip(a.state, b.state, strict=True):
        torch.testing.assert_close(h2, h1)
        torch.testing.assert_close(c2, c1)
    lm_loss(a, targets, values, train).backward()
    lm_loss(b, targets, values, train).backward()
    torch.testing.assert_close(stn.encoder.weight_e.grad, fixed.encoder.weight.grad)
    torch.testing.assert_close(stn.rnns[1].weight_hh_e.grad, fixed.rnns[1].weight_hh_l0.grad)


# --- black-box door -------------------------------------------------------------------------------------------------
def test_learning_rate_rule_is_the_reference_non_monotonic_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=32.0)
    rule = NonMonotonicDecay(nonmono=2, factor=4.0)
    fired = [rule.step(opt, v) for v in [5.0, 4.0, 4.5, 3.0, 4.2, 3.9, 3.5]]
    # fires when the loss is worse than the best of the epochs before the last two (3.5: better than the last
    # two, worse than the 3.0 before them)
    assert fired == [False, False, False, False, True, False, True]
    assert opt.param_groups[0]["lr"] == 2.0


def test_trial_is_reproducible_and_resumes_exactly():
    task = PtbTask("tiny")
    config = task.space.default()
    meter = BudgetMeter(Budget(epochs=100), task.train_size)
    straight = task.make_trial(config, seed=3)
    reports = [straight.train_epoch(meter).val_loss for _ in range(2)]
    first = task.make_trial(config, seed=3)
    assert first.train_epoch(meter).val_loss == reports[0]  # same seed, same numbers
    second = task.make_trial(config, seed=99)
    second.load_state_dict(first.state_dict())
    assert second.train_epoch(meter).val_loss == reports[1]
    assert second.epoch == 2 and second.decay.history == straight.decay.history


def test_trial_charges_examples_and_reports_perplexity_and_best_test_metrics():
    task = PtbTask("tiny")
    result = task.train(task.space.default(), seed=0)
    assert result.status == "completed" and result.epochs_trained == task.max_epochs
    assert result.cost_epochs == pytest.approx(task.max_epochs)
    assert task.train_size == task.windows_per_epoch * task.preset.settings["batch_size"]
    best = result.reports[result.best_epoch - 1]
    assert best.metrics["perplexity"] == pytest.approx(math.exp(best.val_loss))
    assert result.test_metrics["perplexity"] == pytest.approx(math.exp(result.test_metrics["loss"]))
    assert 4.0 < result.test_metrics["loss"] < math.log(len(PtbTask("tiny").corpus.vocab))  # learnt something


# --- white-box door -------------------------------------------------------------------------------------------------
def test_stn_problem_carries_the_state_across_windows():
    task = PtbTask("tiny")
    problem = task.stn_problem(0)
    problem.model.eval()
    gates = torch.zeros(task.preset.settings["batch_size"], len(HPARAMS))
    values = torch.zeros_like(gates)
    batches = problem.train_batches(torch.Generator())
    first = next(batches)
    a = problem.loss(first, gates, values, train=False)
    assert problem.loss(first, gates, values, train=False) == a  # the same window starts from the same state
    second = next(batches)
    carried = problem.loss(second, gates, values, train=False)
    problem._state["train"] = None
    assert problem.loss(second, gates, values, train=False) != carried
    assert problem.defaults["warmup_steps"] == task.windows_per_epoch and problem.defaults["lr"] == 30.0
    assert problem.defaults["sigma_init"] == 1.0 and problem.defaults["tune_sigma"] is False


def test_stn_hyper_step_moves_lambda_through_the_gates():
    task = PtbTask("tiny")
    problem = task.stn_problem(0)
    trainer = StnTrainer(problem, StnSettings().resolved(problem, task.max_epochs), 0)
    meter = BudgetMeter(Budget(epochs=1e6), task.train_size)
    before = trainer.hyper.u.detach().clone()
    trainer.hyper_step(next(problem.val_batches(trainer.generator)), meter)
    assert not torch.equal(trainer.hyper.u.detach(), before)
    assert isinstance(trainer.weight_opt, torch.optim.SGD) and trainer.settings.hyper_lr == 0.01


def test_stn_hyper_step_forms_no_weight_gradient_and_its_lambda_gradient_is_unchanged():
    task = PtbTask("tiny")
    problem = task.stn_problem(0)
    trainer = StnTrainer(problem, StnSettings().resolved(problem, task.max_epochs), 0)
    window = next(problem.val_batches(trainer.generator))
    u = trainer.hyper.u
    problem.model.eval()

    def lambda_gradient(freeze: bool) -> torch.Tensor:
        with frozen(trainer.weights) if freeze else contextlib.nullcontext():
            gates = trainer.hyper.centre(problem.batch_size(window))
            loss = problem.loss(window, gates, trainer.hyper.task_values(gates), train=False)
        return torch.autograd.grad(loss, [u])[0]

    assert torch.equal(lambda_gradient(freeze=True), lambda_gradient(freeze=False))  # the same window, same state
    weight_shapes = {tuple(w.shape) for w in trainer.weights}
    weight_shapes |= {(2 * rnn.weight_hh_e.shape[0], rnn.weight_hh_e.shape[1]) for rnn in problem.model.rnns}
    with MatrixProducts() as products:
        trainer.hyper_step(window, BudgetMeter(Budget(epochs=1e6), task.train_size))
    assert products.shapes and not weight_shapes & set(products.shapes)  # no weight-gradient product
    assert all(w.requires_grad for w in trainer.weights)


# --- the harness, both doors ----------------------------------------------------------------------------------------
def test_random_search_run_on_tiny(tmp_path):
    spec = RunSpec("ptb", "random", seed=0, budget="2ep", preset="tiny", out=tmp_path)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["epochs"] <= 2
    assert set(summary["incumbent"]["test_metrics"]) == {"loss", "perplexity"}
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert reports and all("perplexity" in r["metrics"] for r in reports)


def test_stn_run_on_tiny_stores_the_seven_schedules(tmp_path):
    spec = RunSpec("ptb", "stn", seed=0, budget="3ep", preset="tiny", out=tmp_path)
    summary = execute(spec, progress=False)
    assert summary["status"] == "completed" and summary["epochs"] <= 3
    reports = [e for e in read_events(spec.path) if e["event"] == "report"]
    assert len(reports) >= 2
    assert all(set(HPARAMS) <= set(r["hparams"]) for r in reports)
    assert reports[-1]["hparams"] != reports[0]["hparams"]  # the hyperparameters moved: a schedule
    assert set(summary["incumbent"]["test_metrics"]) == {"loss", "perplexity"}

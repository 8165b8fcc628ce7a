"""`flora-eval train` on the tiny model and real source files found on this machine (Debian's
Perl modules, the Python sources of installed packages)."""

from __future__ import annotations

import glob
import json
from itertools import islice
from pathlib import Path

import pytest
import torch

from harness.adapters import attach, init_adapter, load_adapter
from harness.cli import main
from harness.corpus import heldout_blocks, open_corpus, tokenizer_encoder
from harness.models import build_tiny
from harness.training.config import TrainConfig, adapter_name, adapter_seed, lr_at
from harness.training.run import train_adapters
from harness.training.session import method_config

PERL_DIRS = ["/usr/share/perl/*", "/usr/share/perl5", "/usr/lib/*/perl-base", "/usr/lib/*/perl/*"]
# The tiny model has random weights: rank-1 adapters of it learn slowly at the paper's rates
# (tuned for StarCoder), so the learning tests use larger ones.
TINY_LR = {"flora": 0.1, "lora": 0.005, "ia3": 0.2}


@pytest.fixture(scope="module")
def perl_dir() -> Path:
    for pattern in PERL_DIRS:
        for path in sorted(glob.glob(pattern)):
            if len(list(Path(path).rglob("*.pm"))) >= 200:
                return Path(path)
    pytest.skip("no Perl sources on this machine (Debian's perl-base puts them under /usr/lib/*/perl-base)")


@pytest.fixture(scope="module")
def python_dir() -> Path:
    return Path(torch.__file__).parent / "nn"  # always present where the tests run


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is faster than two fighting other processes for 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def plan(lang, method, rank, data, lr=None, name=None):
    rank = None if method == "ia3" else rank
    return {"name": name or adapter_name(lang, rank, method), "method": method, "rank": rank, "lang": lang,
            "lr": lr if lr is not None else TINY_LR[method], "alpha": None, "data": str(data)}


def small(**kw) -> TrainConfig:
    values = dict(model="tiny", steps=6, batch_size=4, seq_len=32, eval_blocks=4, checkpoint_every=3)
    return TrainConfig(**(values | kw))


def saved_tensors(path: Path) -> dict[str, torch.Tensor]:
    return dict(load_adapter(path).tensors)


# ---------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------
def test_lr_schedules():
    config = TrainConfig(model="tiny", steps=10, warmup=2, schedule="linear")
    assert [lr_at(s, config) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_at(11, config) == 0.0
    cosine = TrainConfig(model="tiny", steps=10, schedule="cosine")
    assert lr_at(0, cosine) == 1.0 and abs(lr_at(5, cosine) - 0.5) < 1e-9
    assert lr_at(7, TrainConfig(model="tiny")) == 1.0


def test_paper_defaults_and_names():
    config = TrainConfig(model="m")
    assert (config.steps, config.batch_size) == (1500, 8)
    assert adapter_name("rb", 1, "flora") == "rb-r1-flora"
    assert adapter_name("rb", None, "ia3") == "rb-ia3"


def test_cli_plans_every_combination(monkeypatch, tmp_path):
    from harness.cli import build_parser
    from harness.training.cli import plan_adapters

    args = build_parser().parse_args(
        ["train", "--model", "tiny", "--lang", "ruby", "--lang", "pl", "--method", "flora", "--method", "IA3",
         "--rank", "1", "--rank", "4", "--data", f"rb={tmp_path}", "--data", "/x", "--lr", "ia3=0.2"])
    plans = plan_adapters(args)
    assert [p["name"] for p in plans] == ["rb-r1-flora", "rb-r4-flora", "rb-ia3",
                                          "pl-r1-flora", "pl-r4-flora", "pl-ia3"]
    assert {p["lang"]: p["data"] for p in plans} == {"rb": str(tmp_path), "pl": "/x"}
    assert plans[2]["lr"] == 0.2 and plans[0]["lr"] == 8e-3


def test_learning_rates_per_method():
    from harness.errors import UserError
    from harness.training.cli import learning_rates

    assert learning_rates([]) == {"flora": 8e-3, "lora": 1e-4, "ia3": 5e-3}  # the paper's
    assert learning_rates(["0.5", "lora=1e-3"]) == {"flora": 0.5, "lora": 1e-3, "ia3": 0.5}
    with pytest.raises(UserError, match="not a method"):
        learning_rates(["dora=1"])


def test_cli_errors_are_one_line(monkeypatch, capsys, tmp_path):
    assert main(["train", "--model", "tiny", "--lang", "rb", "--lang", "pl", "--name", "x"]) == 2
    assert "--name names one adapter" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["train", "--model", "tiny", "--lang", "rb", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --data DIR" in err and "bigcode/the-stack data/ruby" in err
    assert main(["train", "--model", "tiny", "--lang", "pl", "--method", "flora", "--alpha", "16",
                 "--data", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------------------
# Training works
# ---------------------------------------------------------------------------------------
def mean_loss(model, ids: torch.Tensor) -> float:
    from harness.training.loop import row_losses

    with torch.no_grad():
        return float(row_losses(model(input_ids=ids).logits, ids).mean())


@pytest.fixture(scope="module")
def learned(perl_dir, tmp_path_factory):
    """FLoRA, LoRA and IA3 trained together for 200 steps (mixed batches; the same as one by
    one, see test_mixed_batches_equal_one_by_one), once for the tests below."""
    config = TrainConfig(model="tiny", steps=200, batch_size=8, seq_len=64, eval_blocks=64,
                         heldout_fraction=0.1, checkpoint_every=10**6)
    plans = [plan("pl", method, 1, perl_dir) for method in ("flora", "lora", "ia3")]
    results = train_adapters(config, plans, tmp_path_factory.mktemp("learned"), progress=False)
    return {result.job.method: result for result in results}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["flora", "lora", "ia3"])
def test_each_method_learns_and_beats_the_base_on_heldout(method, learned, perl_dir):
    """The tiny model's random tied embeddings cap how far any adapter can move its loss
    (logits stay within about ±1.3), so "clearly" here means a few hundredths of a nat on
    fixed sequences, far above float noise; per-batch losses vary more with the content."""
    from harness.corpus import train_blocks

    result = learned[method]
    # the training loss over the run's own sequences (every 10th), before and after training
    corpus = open_corpus("pl", perl_dir, heldout_fraction=0.1)
    model, tokenizer = build_tiny()
    blocks = train_blocks(corpus, tokenizer_encoder(tokenizer), 0, 64, seed=0)
    ids = torch.tensor(list(islice(blocks, 0, 200 * 8, 10)))
    before = mean_loss(model, ids)
    attach(model, [load_adapter(result.path, base_model=model)]).set_rows([0] * len(ids))
    after = mean_loss(model, ids)
    assert after < before - 0.05, (before, after)
    held = result.heldout
    assert held.loss < held.base_loss - 0.03, held
    meta = load_adapter(result.path).metadata
    assert meta["heldout"]["perplexity"] < meta["heldout"]["base_perplexity"]
    assert (meta["method"], meta["language"], meta["base_model"]) == (method, "pl", "tiny")
    assert meta["steps"] == 200
    assert meta["data_source"] == f"dir:{perl_dir.resolve()}"
    assert meta["content_hash"] == result.content_hash


def test_saved_adapter_reloads_to_identical_logits(perl_dir, tmp_path):
    from harness.training import session
    from harness.training.config import AdapterJob
    from harness.training.loop import train

    config = small(steps=4, checkpoint_every=10**6)
    model, tokenizer = build_tiny()
    model.requires_grad_(False).eval()
    corpus = open_corpus("pl", perl_dir)
    jobs = [AdapterJob(name, method, rank, "pl", TINY_LR[method], corpus.describe())
            for name, method, rank in (("a", "flora", 2), ("b", "lora", 1), ("c", "ia3", None))]
    adapters = session.start(model, jobs, config)
    encode = tokenizer_encoder(tokenizer)

    def streams(skip):
        from harness.corpus import train_blocks

        return [train_blocks(corpus, encode, 0, config.seq_len, 0, skip=s) for s in skip]

    train(model, adapters, jobs, streams, config, progress=False)
    ids = torch.tensor(heldout_blocks(corpus, encode, 0, config.seq_len, 3))
    for i, job in enumerate(jobs):
        with torch.no_grad():
            adapters.set_rows(torch.full((len(ids),), i))
            trained = model(input_ids=ids).logits
        session.save(adapters, i, tmp_path / job.name, {"language": "pl"})
        fresh, _ = build_tiny()
        attach(fresh, [load_adapter(tmp_path / job.name, base_model=fresh)]).set_rows([0] * len(ids))
        with torch.no_grad():
            reloaded = fresh(input_ids=ids).logits
        assert torch.equal(trained, reloaded), job.name
        assert not torch.equal(reloaded, build_tiny()[0](input_ids=ids).logits)  # it did train


# ---------------------------------------------------------------------------------------
# Exactness: resume, mixed batches
# ---------------------------------------------------------------------------------------
def test_resume_continues_exactly(perl_dir, tmp_path):
    plans = [plan("pl", "flora", 1, perl_dir), plan("pl", "lora", 2, perl_dir)]
    config = small(steps=8, checkpoint_every=3, grad_accum=2, schedule="cosine", warmup=2)
    straight = train_adapters(config, plans, tmp_path / "straight", progress=False)

    def interrupt(state):
        if state.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_adapters(config, plans, tmp_path / "resumed", progress=False, on_step=interrupt)
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / ".checkpoints").rglob("*.pt"))
    assert checkpoints == ["step-000003.pt"]
    resumed = train_adapters(config, plans, tmp_path / "resumed", resume=True, progress=False)
    for a, b in zip(straight, resumed, strict=True):
        assert a.losses == b.losses
        assert a.content_hash == b.content_hash  # bit-identical tensors
    assert resumed[0].metadata["steps"] == 8


def test_resume_refuses_other_settings(perl_dir, tmp_path):
    from harness.errors import UserError

    plans = [plan("pl", "ia3", None, perl_dir)]
    train_adapters(small(steps=3), plans, tmp_path, progress=False)
    with pytest.raises(UserError, match="other settings"):
        train_adapters(small(steps=3, seed=1), plans, tmp_path, resume=True, progress=False)


def test_mixed_batches_equal_one_by_one(perl_dir, python_dir, tmp_path):
    """Three methods, two languages, one process: each adapter ends where it ends alone."""
    plans = [plan("pl", "flora", 2, perl_dir), plan("py", "lora", 1, python_dir),
             plan("pl", "ia3", None, perl_dir)]
    config = small(steps=5, grad_accum=2, max_grad_norm=0.5)
    mixed = train_adapters(config, plans, tmp_path / "mixed", progress=False)
    for p, together in zip(plans, mixed, strict=True):
        [alone] = train_adapters(config, [p], tmp_path / p["name"], progress=False)
        assert alone.losses == pytest.approx(together.losses, abs=1e-5)
        a, b = saved_tensors(alone.path), saved_tensors(together.path)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-4, msg=key)
        seed = adapter_seed(config.seed, alone.job)
        fresh = init_adapter(build_tiny()[0], method_config(alone.job), seed=seed)
        assert any(not torch.allclose(a[key], fresh.tensors[key], atol=1e-4) for key in a)  # it trained


def test_cli_end_to_end(perl_dir, tmp_path, capsys):
    out = tmp_path / "adapters"
    code = main(["train", "--model", "tiny", "--method", "lora", "--rank", "1", "--lang", "pl",
                 "--data", str(perl_dir), "--steps", "3", "--batch-size", "2", "--seq-len", "32",
                 "--eval-blocks", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("pl-r1-lora: train loss") and "held-out ppl" in line
    config = json.loads((out / "pl-r1-lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 1 and config["target_modules"] == ["c_attn"]
    spec = load_adapter("pl-r1-lora", base_model="tiny", adapters_dir=out)
    assert spec.metadata["steps"] == 3 and spec.metadata["language"] == "pl"


def test_resume_extends_a_finished_run_under_a_constant_schedule(perl_dir, tmp_path):
    plans = [plan("pl", "lora", 1, perl_dir)]
    [straight] = train_adapters(small(steps=6, checkpoint_every=100), plans, tmp_path / "a", progress=False)
    train_adapters(small(steps=4, checkpoint_every=100), plans, tmp_path / "b", progress=False)
    [extended] = train_adapters(small(steps=6, checkpoint_every=100), plans, tmp_path / "b", resume=True,
                                progress=False)
    assert extended.content_hash == straight.content_hash

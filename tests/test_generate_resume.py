"""Safe resume through the real CLI: a run directory never mixes settings. A larger n keeps
the samples and adds the missing indices (equal to a fresh run at that n); any other change
stops with one line and leaves the run untouched; --overwrite regenerates only what differs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.adapters import LoRAConfig, init_adapter, save_adapter
from harness.cli import main
from harness.files import read_completions, write_completions
from harness.models import build_tiny
from harness.runs import RunDir


def generate(capsys, run_dir: Path, humaneval_dir: Path, *extra: str, n: int = 2) -> tuple[int, str]:
    code = main(["generate", "--model", "tiny", "--device", "cpu", "--dataset", str(humaneval_dir),
                 "--lang", "py", "--limit", "2", "-n", str(n), "--max-tokens", "16",
                 "--temperature", "0.8", "--seed", "7", "--run-dir", str(run_dir), *extra])
    return code, capsys.readouterr().err.strip()


def completions(root: Path) -> dict[str, tuple[str, ...]]:
    return {str(p.relative_to(root)): read_completions(p).completions
            for p in RunDir(root).completion_files()}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the run, byte for byte (the manifest included)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(code: int, err: str) -> str:
    line = err.splitlines()[-1] if err else ""
    assert code == 2 and line.startswith("flora-eval: error:"), err
    return line


def test_a_larger_n_keeps_the_samples_and_equals_a_fresh_run(capsys, tmp_path, humaneval_dir):
    assert generate(capsys, tmp_path / "grown", humaneval_dir, n=2)[0] == 0
    first = completions(tmp_path / "grown")
    assert generate(capsys, tmp_path / "grown", humaneval_dir, n=5)[0] == 0
    assert generate(capsys, tmp_path / "fresh", humaneval_dir, n=5)[0] == 0
    grown = completions(tmp_path / "grown")
    assert grown == completions(tmp_path / "fresh")
    assert all(len(texts) == 5 and texts[:2] == first[name] for name, texts in grown.items())
    record = read_completions(RunDir(tmp_path / "grown").completion_files()[0])
    assert record.provenance.sampling.n == 5
    history = RunDir(tmp_path / "grown").read_manifest()["invocations"]
    assert [entry["config"]["sampling"]["n"] for entry in history] == [2, 5]
    assert all(entry["stage"] == "generate" and entry["command"] for entry in history)


def test_extending_n_drops_results_of_the_smaller_file(capsys, tmp_path, humaneval_dir):
    assert generate(capsys, tmp_path, humaneval_dir, n=2)[0] == 0
    path = RunDir(tmp_path).completion_files()[0]
    stale = path.with_name(path.name.replace(".json.gz", ".results.json.gz"))
    stale.write_bytes(b"results of the 2-sample file")
    assert generate(capsys, tmp_path, humaneval_dir, n=3)[0] == 0
    assert not stale.exists()  # they described 2 samples; execution will run all 3


@pytest.mark.parametrize(("flag", "value", "setting"), [
    ("--temperature", "0.2", "temperature is 0.8 there, 0.2 now"),
    ("--seed", "8", "seed is 7 there, 8 now"),
    ("--top-p", "0.5", "top_p is 0.95 there, 0.5 now"),
    ("--max-tokens", "24", "max_tokens is 16 there, 24 now"),
])
def test_another_sampling_setting_stops_and_leaves_the_run_untouched(capsys, tmp_path, humaneval_dir,
                                                                      flag, value, setting):
    assert generate(capsys, tmp_path, humaneval_dir)[0] == 0
    before = snapshot(tmp_path)
    code, err = generate(capsys, tmp_path, humaneval_dir, flag, value)
    line = one_line_error(code, err)
    assert setting in line and "--run-id" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before


def test_a_smaller_n_is_a_difference_too(capsys, tmp_path, humaneval_dir):
    assert generate(capsys, tmp_path, humaneval_dir, n=3)[0] == 0
    before = snapshot(tmp_path)
    line = one_line_error(*generate(capsys, tmp_path, humaneval_dir, n=2))
    assert "n is 3 there, 2 now" in line and snapshot(tmp_path) == before


def save_lora(adapters: Path, seed: int) -> None:
    model = build_tiny()[0]
    spec = init_adapter(model, LoRAConfig(r=2), name="py-r2-lora", seed=seed)
    save_adapter(spec, adapters / "py-r2-lora", metadata={"language": "py", "base_model": "tiny"})


def test_a_retrained_adapter_stops_the_run_and_overwrite_regenerates_only_it(capsys, tmp_path,
                                                                             humaneval_dir):
    adapters, run = tmp_path / "adapters", tmp_path / "run"
    save_lora(adapters, seed=1)
    args = ("--adapter", "py-r2-lora", "--adapters-dir", str(adapters))
    assert generate(capsys, run, humaneval_dir, *args)[0] == 0
    base_files = {p: p.read_bytes() for p in RunDir(run).completion_files() if "/base/" in str(p)}
    adapter_files = {p: p.read_bytes() for p in RunDir(run).completion_files() if "/py-r2-lora/" in str(p)}
    assert len(base_files) == len(adapter_files) == 2

    save_lora(adapters, seed=2)  # retrained under the same name: other weights
    before = snapshot(run)
    line = one_line_error(*generate(capsys, run, humaneval_dir, *args))
    assert "adapter_hash is 'sha256:" in line and "py-r2-lora" in line
    assert snapshot(run) == before

    assert generate(capsys, run, humaneval_dir, *args, "--overwrite")[0] == 0
    assert all(p.read_bytes() == data for p, data in base_files.items())  # same settings: kept
    assert all(p.read_bytes() != data for p, data in adapter_files.items())  # regenerated
    new_hash = read_completions(next(iter(adapter_files))).provenance.adapter_hash
    assert new_hash != "" and new_hash in str(RunDir(run).read_manifest()["config"]["adapters"])


def test_a_changed_prompt_is_a_difference(capsys, tmp_path, humaneval_dir):
    edited = tmp_path / "data"
    edited.mkdir()
    rows = (humaneval_dir / "humaneval-py.jsonl").read_text(encoding="utf-8").splitlines()
    (edited / "humaneval-py.jsonl").write_text("\n".join(rows[:2]) + "\n", encoding="utf-8")
    assert generate(capsys, tmp_path / "run", edited)[0] == 0
    (edited / "humaneval-py.jsonl").write_text(rows[0].replace("Check if", "Tell if") + "\n" + rows[1] + "\n",
                                               encoding="utf-8")
    line = one_line_error(*generate(capsys, tmp_path / "run", edited))
    assert "dataset_revision is 'sha256:" in line and "prompt is" in line


def restamp(root: Path, **settings) -> None:
    """Rewrite every completions file's provenance, as if another machine or an older
    flora-eval (a setting it did not record reads as "" or None) had made it."""
    for path in RunDir(root).completion_files():
        record = read_completions(path)
        provenance = dataclasses.replace(record.provenance, **settings)
        write_completions(path, dataclasses.replace(record, provenance=provenance))


def test_the_provenance_records_how_the_weights_were_held_and_each_finish_reason(capsys, tmp_path,
                                                                                 humaneval_dir):
    assert generate(capsys, tmp_path, humaneval_dir, n=3)[0] == 0
    for path in RunDir(tmp_path).completion_files():
        record = read_completions(path)
        p = record.provenance
        assert (p.dtype, p.quantization, p.device, p.seeded) == ("float32", "none", "cpu", True)
        assert len(record.finish_reasons) == 3 and set(record.finish_reasons) <= {"stop", "length"}
    model = RunDir(tmp_path).read_manifest()["model"]
    assert (model["dtype"], model["quantization"], model["device"]) == ("float32", "none", "cpu")


@pytest.mark.parametrize(("settings", "shown"), [
    ({"dtype": "bfloat16"}, "dtype is 'bfloat16' there, 'float32' now"),
    ({"quantization": "int8"}, "quantization is 'int8' there, 'none' now"),
    ({"device": "cuda"}, "device is 'cuda' there, 'cpu' now"),
    ({"dtype": "", "quantization": "", "device": "", "seeded": None}, "dtype is not recorded there"),
    ({"model_revision": ""}, "model_revision is not recorded there"),
])
def test_samples_of_other_weights_are_never_resumed(capsys, tmp_path, humaneval_dir, settings, shown):
    """fp32 and bf16 samples (or an older file that does not say) never mix in one run."""
    assert generate(capsys, tmp_path, humaneval_dir)[0] == 0
    restamp(tmp_path, **settings)
    before = snapshot(tmp_path)
    line = one_line_error(*generate(capsys, tmp_path, humaneval_dir, n=3))
    assert shown in line and "--run-id" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before
    assert generate(capsys, tmp_path, humaneval_dir, "--overwrite", n=3)[0] == 0
    assert all(read_completions(p).provenance.dtype == "float32" for p in RunDir(tmp_path).completion_files())


def test_each_completions_file_is_read_once(capsys, tmp_path, humaneval_dir, monkeypatch):
    """One plan, made once and carried through: extending n reads every file one time."""
    from harness.generate import resume

    assert generate(capsys, tmp_path, humaneval_dir, n=2)[0] == 0
    reads: list[Path] = []

    def counted(path):
        reads.append(Path(path))
        return read_completions(path)

    monkeypatch.setattr(resume, "read_completions", counted)
    assert generate(capsys, tmp_path, humaneval_dir, n=3)[0] == 0
    files = RunDir(tmp_path).completion_files()
    assert len(files) == 2 and sorted(reads) == sorted(files)

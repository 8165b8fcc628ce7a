import json
import re
from itertools import islice

import pytest

from harness.corpus import (
    documents,
    heldout_blocks,
    is_heldout,
    open_corpus,
    pack,
    split_documents,
    train_blocks,
)
from harness.errors import UserError


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def write_sources(root, n=40):
    for i in range(n):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"m{i}.rb").write_text(f"def f{i}(x)\n  x + {i}\nend\n" * (1 + i % 4))
    (root / "notes.txt").write_text("not ruby")
    (root / "bin.rb").write_bytes(b"\xff\xfe\x00binary")


def test_pack_joins_with_eos_and_cuts_fixed_blocks():
    blocks = list(pack([[1, 2, 3], [4], [5, 6, 7, 8, 9]], seq_len=4, eos_id=0))
    assert blocks == [[1, 2, 3, 0], [4, 0, 5, 6], [7, 8, 9, 0]]
    assert list(pack([[1]], seq_len=4, eos_id=0)) == []  # a partial tail is dropped


def test_directory_corpus_reads_only_the_language_and_skips_binary(tmp_path):
    write_sources(tmp_path)
    corpus = open_corpus("rb", tmp_path)
    docs = list(documents(corpus, seed=0, epoch=0))
    assert len(docs) == 40
    assert all(d.key.endswith(".rb") and d.key != "bin.rb" for d in docs)
    assert docs[0].key.startswith("pkg")  # relative keys: the split survives moving the folder


def test_order_depends_on_seed_and_epoch_but_is_reproducible(tmp_path):
    write_sources(tmp_path)
    corpus = open_corpus("rb", tmp_path)
    keys = lambda seed, epoch: [d.key for d in documents(corpus, seed, epoch)]  # noqa: E731
    assert keys(0, 0) == keys(0, 0)
    assert keys(0, 0) != keys(0, 1)
    assert keys(0, 0) != keys(1, 0)
    assert sorted(keys(0, 0)) == sorted(keys(1, 1))


def test_heldout_split_is_disjoint_and_independent_of_order(tmp_path):
    write_sources(tmp_path, n=200)
    corpus = open_corpus("rb", tmp_path, heldout_fraction=0.2)
    train = {d.key for d in split_documents(corpus, 3, 0, heldout=False)}
    held = {d.key for d in split_documents(corpus, 5, 2, heldout=True)}
    assert train and held and not train & held
    assert len(train | held) == 200
    assert 0.1 < len(held) / 200 < 0.3
    assert all(is_heldout(k, 0.2) for k in held)


def test_train_stream_is_endless_and_resumes_by_skipping(tmp_path):
    write_sources(tmp_path, n=10)
    corpus = open_corpus("rb", tmp_path, heldout_fraction=0.0)
    total_tokens = sum(len(encode(d.text)) + 1 for d in documents(corpus, 0, 0))
    n = 3 * total_tokens // 16  # about three epochs
    full = list(islice(train_blocks(corpus, encode, 0, 16, seed=7), n))
    assert len(full) == n and all(len(b) == 16 for b in full)
    resumed = list(islice(train_blocks(corpus, encode, 0, 16, seed=7, skip=n // 2), n - n // 2))
    assert resumed == full[n // 2:]


def test_heldout_blocks_come_from_heldout_documents_only(tmp_path):
    write_sources(tmp_path, n=200)
    corpus = open_corpus("rb", tmp_path, heldout_fraction=0.2)
    blocks = heldout_blocks(corpus, encode, 0, 16, n_blocks=5)
    assert len(blocks) == 5
    held_text = "".join(d.text for d in split_documents(corpus, 0, 0, heldout=True))
    first = bytes(t for t in blocks[0] if t != 0).decode()
    assert first[:8] in held_text


def test_jsonl_corpus(tmp_path):
    path = tmp_path / "code.jsonl"
    rows = [{"content": f"puts {i}\n", "path": f"{i}.rb"} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    corpus = open_corpus("rb", path)
    assert corpus.describe() == f"jsonl:{path.resolve()}"
    assert sorted(d.text for d in documents(corpus, 0, 0)) == sorted(r["content"] for r in rows)


def test_bad_jsonl_row_is_one_clear_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "x"}\n')
    with pytest.raises(UserError, match="`content` field"):
        list(documents(open_corpus("rb", path), 0, 0))


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="no rb source files"):
        open_corpus("rb", tmp_path)
    with pytest.raises(UserError, match="not a directory or a .jsonl"):
        open_corpus("rb", tmp_path / "missing")
    with pytest.raises(UserError, match="unknown language 'klingon'"):
        open_corpus("klingon", tmp_path)
    with pytest.raises(UserError, match="no rb source files"):  # an alias names the key
        open_corpus("ruby", tmp_path)


def test_offline_stack_says_pass_data(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="--data") as info:
        open_corpus("rb")
    assert "\n" not in str(info.value)
    assert "bigcode/the-stack data/ruby" in str(info.value)


def test_a_language_alias_finds_its_stack_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="bigcode/the-stack data/ruby"):
        open_corpus("ruby")


def test_shuffle_buffer_is_a_seeded_permutation():
    import random

    from harness.corpus import shuffle_buffer

    items = [[i] for i in range(100)]
    a = list(shuffle_buffer(items, 10, random.Random(1)))
    assert sorted(a) == items and a != items
    assert a == list(shuffle_buffer(items, 10, random.Random(1)))
    assert list(shuffle_buffer(items, 1000, random.Random(2))) != a  # short input: all in the buffer


def test_heldout_blocks_span_documents(tmp_path):
    for i in range(30):
        (tmp_path / f"big{i}.rb").write_text(f"# file {i}\n" + "x = 1\n" * 200)
    corpus = open_corpus("rb", tmp_path, heldout_fraction=0.5)
    blocks = heldout_blocks(corpus, encode, 0, 16, n_blocks=10, per_document=1)
    files = set(re.findall(rb"# file \d+", b"".join(bytes(b) for b in blocks)))
    assert len(blocks) == 10 and len(files) >= 9  # each file gives at most one block's worth


def test_hub_layout_streams_from_a_local_dataset_folder(tmp_path, monkeypatch):
    """`--data hf:ID` goes through `datasets` streaming exactly as The Stack does; a local
    folder with The Stack's layout (data/<lang dir>/*.jsonl) exercises it offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "stack" / "data" / "ruby"
    folder.mkdir(parents=True)
    rows = [{"content": f"puts {i}\n", "hexsha": f"{i:040x}", "lang": "Ruby"} for i in range(50)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "stack" / "data" / "perl").mkdir()
    (tmp_path / "stack" / "data" / "perl" / "train.jsonl").write_text('{"content": "print 1;"}\n')
    corpus = open_corpus("rb", f"hf:{tmp_path / 'stack'}")
    assert corpus.describe() == f"hub:{tmp_path / 'stack'}/data/ruby"
    epoch0 = [d.key for d in documents(corpus, seed=0, epoch=0)]
    assert sorted(epoch0) == sorted(r["hexsha"] for r in rows)  # only data/ruby, keyed by hexsha
    assert epoch0 == [d.key for d in documents(corpus, seed=0, epoch=0)]
    assert epoch0 != [d.key for d in documents(corpus, seed=0, epoch=1)]
    assert len(list(islice(train_blocks(corpus, encode, 0, 8, seed=0), 100))) == 100

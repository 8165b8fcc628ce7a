"""Training text for adapters: one language's source files, packed into fixed-length blocks.

Three sources give the same thing, a deterministic stream of documents per epoch:

    the hub      bigcode/the-stack, data_dir=data/<stack dir>, streamed (gated: needs a token);
                 `--data hf:ID` streams another dataset laid out the same way (the-stack-dedup,
                 the-stack-smol, or a local folder with data/<stack dir>/*.jsonl|parquet)
    a directory  every file with the language's extensions, recursively

A language's Stack folder and extensions are in its TOML file (`languages/<key>.toml`:
`corpus_dir`, `extensions`).
    a .jsonl     one JSON object per line with a `content` field

Documents are split once into train and held-out by a hash of their key (relative path or
content), so the split does not depend on order or seed. Training tokens are packed: each
document's tokens followed by EOS, cut into blocks of `seq_len`, shuffled through a seeded
buffer; the stream runs over epochs (a new document order each) for ever, so a training
step only asks for the next block and resuming is skipping the blocks already used
(`train_blocks(..., skip=n)`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path

from harness.errors import UserError
from harness.execute.languages import load_language
from harness.hub import hub_state, quiet

STACK_DATASET = "bigcode/the-stack"
HUB_PREFIX = "hf:"
STACK_SHUFFLE_BUFFER = 10_000
MAX_FILE_BYTES = 1_000_000  # larger files are generated or data, not code to learn from
HELDOUT_FRACTION = 0.05
BLOCK_SHUFFLE_BUFFER = 256  # packed blocks shuffled together (deterministically, by seed)


@dataclass(frozen=True)
class Document:
    key: str  # what the train/held-out split hashes: a relative path or a content hash
    text: str


@dataclass(frozen=True)
class Corpus:
    """Where one language's documents come from; `describe()` is what metadata records."""

    lang: str
    kind: str  # "hub" | "dir" | "jsonl"
    location: str  # a hub dataset id (or a local dataset folder), or a resolved path
    heldout_fraction: float = HELDOUT_FRACTION
    data_dir: str = ""  # hub: the language's folder, e.g. data/ruby

    def describe(self) -> str:
        where = f"{self.location}/{self.data_dir}" if self.data_dir else self.location
        return f"{self.kind}:{where}"


def open_corpus(lang: str, data: str | Path | None = None,
                heldout_fraction: float = HELDOUT_FRACTION) -> Corpus:
    """The corpus of `lang`: `data` (a directory, a .jsonl or `hf:<dataset>`) when given,
    else The Stack."""
    language = load_language(lang)
    lang = language.key
    if data is None or str(data).startswith(HUB_PREFIX):
        dataset = str(data)[len(HUB_PREFIX):] if data is not None else STACK_DATASET
        corpus = Corpus(lang, "hub", dataset, heldout_fraction, data_dir=f"data/{language.corpus_dir}")
        _probe_hub(corpus)
        return corpus
    path = Path(data).expanduser()
    if path.is_dir():
        corpus = Corpus(lang, "dir", str(path.resolve()), heldout_fraction)
        if next(_source_files(corpus), None) is None:
            raise UserError(f"no {lang} source files ({' '.join(language.extensions)}) under {path}; "
                            "pass --data with a directory that has some, or a .jsonl with `content`")
        return corpus
    if path.is_file() and path.suffix == ".jsonl":
        return Corpus(lang, "jsonl", str(path.resolve()), heldout_fraction)
    raise UserError(f"--data {data}: not a directory or a .jsonl file; pass a folder of {lang} "
                    "sources or a .jsonl with one {\"content\": ...} object per line")


# ---------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------
def documents(corpus: Corpus, seed: int, epoch: int) -> Iterator[Document]:
    """All documents of `corpus` in this epoch's shuffled order (same seed, same order)."""
    return _READERS[corpus.kind](corpus, seed, epoch)


def is_heldout(key: str, fraction: float) -> bool:
    """The train/held-out split: a pure function of the document's key."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < fraction


def split_documents(corpus: Corpus, seed: int, epoch: int, heldout: bool) -> Iterator[Document]:
    return (doc for doc in documents(corpus, seed, epoch)
            if is_heldout(doc.key, corpus.heldout_fraction) == heldout)


def _epoch_rng(seed: int, epoch: int) -> random.Random:
    return random.Random(f"{seed}:{epoch}")


def _source_files(corpus: Corpus) -> Iterator[Path]:
    extensions = set(load_language(corpus.lang).extensions)
    root = Path(corpus.location)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix in extensions:
                path = Path(dirpath) / name
                if path.is_file():
                    yield path


def _read_dir(corpus: Corpus, seed: int, epoch: int) -> Iterator[Document]:
    root = Path(corpus.location)
    paths = list(_source_files(corpus))
    _epoch_rng(seed, epoch).shuffle(paths)
    for path in paths:
        text = _read_text(path)
        if text:
            yield Document(path.relative_to(root).as_posix(), text)


def _read_text(path: Path) -> str | None:
    """A source file's text, or None for what is not UTF-8 code (binary, huge, unreadable)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_jsonl(corpus: Corpus, seed: int, epoch: int) -> Iterator[Document]:
    path = Path(corpus.location)
    offsets = _line_offsets(path)
    _epoch_rng(seed, epoch).shuffle(offsets)
    with path.open("rb") as f:
        for offset in offsets:
            f.seek(offset)
            line = f.readline()
            try:
                text = json.loads(line)["content"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}: byte {offset} is not a JSON object with a `content` field; "
                                "each line must be {\"content\": \"...\"}") from None
            if isinstance(text, str) and text:
                yield Document(_content_key(text), text)


def _line_offsets(path: Path) -> list[int]:
    offsets, position = [], 0
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets


def _content_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _read_hub(corpus: Corpus, seed: int, epoch: int) -> Iterator[Document]:
    dataset = _hub_dataset(corpus)
    dataset = dataset.shuffle(seed=seed, buffer_size=STACK_SHUFFLE_BUFFER)
    dataset.set_epoch(epoch)
    for row in dataset:
        text = row.get("content") or ""
        if text:
            yield Document(row.get("hexsha") or _content_key(text), text)


def _hub_dataset(corpus: Corpus):
    import datasets

    return datasets.load_dataset(corpus.location, data_dir=corpus.data_dir, split="train", streaming=True)


def _probe_hub(corpus: Corpus) -> None:
    """Fail now, in one line, when the dataset cannot be streamed (hub switched off or out of
    reach — asked once, `harness.hub` —, no token, gated)."""
    hint = (f"cannot stream {corpus.location} {corpus.data_dir}: it needs network access and, for "
            "gated data like The Stack, a Hugging Face token with its terms accepted (`hf auth login`); "
            "offline, pass --data DIR (source files) or --data FILE.jsonl")
    hub = hub_state(for_datasets=True)
    if not hub.usable and not Path(corpus.location).is_dir():
        raise UserError(f"{hint} ({hub.why})")
    try:
        with quiet():
            _hub_dataset(corpus)
    except Exception as exc:  # the hub raises many types: DNS, 401 gated, 404, ...
        raise UserError(f"{hint} ({type(exc).__name__})") from None


_READERS: dict[str, Callable[[Corpus, int, int], Iterator[Document]]] = {
    "dir": _read_dir,
    "jsonl": _read_jsonl,
    "hub": _read_hub,
}


# ---------------------------------------------------------------------------------------
# Tokens and packing
# ---------------------------------------------------------------------------------------
def pack(token_lists: Iterable[list[int]], seq_len: int, eos_id: int) -> Iterator[list[int]]:
    """Join token lists with EOS after each and cut the stream into blocks of `seq_len`
    (the last partial block is dropped: every training row has the same length)."""
    buffer: list[int] = []
    for tokens in token_lists:
        buffer.extend(tokens)
        buffer.append(eos_id)
        while len(buffer) >= seq_len:
            yield buffer[:seq_len]
            del buffer[:seq_len]


def _tokens(docs: Iterable[Document], encode: Callable[[str], list[int]]) -> Iterator[list[int]]:
    return (encode(doc.text) for doc in docs)


def shuffle_buffer(items: Iterable[list[int]], size: int, rng: random.Random) -> Iterator[list[int]]:
    """A seeded shuffle through a buffer of `size` items (as `datasets` does for streams):
    consecutive blocks of one long file are spread over many steps instead of filling a few."""
    buffer: list[list[int]] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def train_blocks(corpus: Corpus, encode: Callable[[str], list[int]], eos_id: int, seq_len: int,
                 seed: int, skip: int = 0, buffer: int = BLOCK_SHUFFLE_BUFFER) -> Iterator[list[int]]:
    """The endless training stream: epoch after epoch of the train split, packed, shuffled
    through a buffer. A pure function of (corpus, seed): `skip` drops the first blocks, so
    resuming after n blocks yields exactly what came next."""

    def all_epochs() -> Iterator[Document]:
        for epoch in count():
            empty = True
            for doc in split_documents(corpus, seed, epoch, heldout=False):
                empty = False
                yield doc
            if empty:
                raise UserError(f"{corpus.describe()}: no {corpus.lang} training documents "
                                "(all empty, unreadable or held out); pass --data with more sources")

    blocks = pack(_tokens(all_epochs(), encode), seq_len, eos_id)
    return islice(shuffle_buffer(blocks, buffer, random.Random(f"blocks:{seed}")), skip, None)


def heldout_blocks(corpus: Corpus, encode: Callable[[str], list[int]], eos_id: int, seq_len: int,
                   n_blocks: int, per_document: int = 2) -> list[list[int]]:
    """Up to `n_blocks` packed blocks of held-out documents (fixed order: epoch 0, seed 0),
    at most `per_document` blocks' worth of tokens from each, so they span many files."""
    docs = split_documents(corpus, seed=0, epoch=0, heldout=True)
    tokens = (ids[: per_document * seq_len] for ids in _tokens(docs, encode))
    return list(islice(pack(tokens, seq_len, eos_id), n_blocks))


def tokenizer_encoder(tokenizer) -> Callable[[str], list[int]]:
    """A transformers tokenizer as a plain `text → ids` function (no BOS/EOS added)."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return encode

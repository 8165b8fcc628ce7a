"""Training text for adapters: one language's source files, packed into fixed-length blocks.

Three sources give the same thing, a deterministic stream of documents per epoch:

    the hub      bigcode/the-stack, data_dir=data/<stack dir>, streamed (gated: needs a token);
                 `--data hf:ID` streams another dataset laid out the same way (the-stack-dedup,
                 the-stack-smol, or a local folder with data/<stack dir>/*.jsonl|parquet)
    a directory  every file with the language's extensions, recursively

A language's Stack folder and extensions are in its TOML file (`languages/<key>.toml`:
`corpus_dir`, `extensions`).
    a .jsonl     one JSON object per line with a `content` field, or conversations:
                 `{"messages": [{"role": ..., "content": ...}, ...]}` per line (TRL's form)

Documents are split once into train and held-out by a hash of their key (relative path or
content), so the split does not depend on order or seed. Training tokens are packed: each
document's tokens followed by EOS, cut into blocks of `seq_len`, shuffled through a seeded
buffer; the stream runs over epochs (a new document order each) for ever, so a training
step only asks for the next block and resuming is skipping the blocks already used
(`train_blocks(..., skip=n)`).

A conversation corpus (kind "chat") is rendered with the model's chat template
(`conversation_tokens`): a block is then `(ids, labels)`, the labels -100 except on the
assistant's tokens (its reply and the end of turn the template writes after it), so the loss
falls on the replies only. The assistant's tokens are found by rendering prefixes: the text
between the conversation rendered up to a reply with the generation prompt and rendered with
that reply is the reply as the model writes it after its prompt; the prompt part is tokenized
whole, as at generation time. Conversations are packed without an EOS between them (the
template ends each reply).
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
    kind: str  # "hub" | "dir" | "jsonl" | "chat" (a .jsonl of conversations)
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
        kind = "chat" if "messages" in _first_object(path) else "jsonl"
        return Corpus(lang, kind, str(path.resolve()), heldout_fraction)
    raise UserError(f"--data {data}: not a directory or a .jsonl file; pass a folder of {lang} "
                    "sources or a .jsonl with one {\"content\": ...} object per line")


def _first_object(path: Path) -> dict:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    break
                return data if isinstance(data, dict) else {}
    return {}


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
    for offset, line in _shuffled_lines(path, seed, epoch):
        try:
            text = json.loads(line)["content"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: byte {offset} is not a JSON object with a `content` field; "
                            "each line must be {\"content\": \"...\"}") from None
        if isinstance(text, str) and text:
            yield Document(_content_key(text), text)


def _read_chat(corpus: Corpus, seed: int, epoch: int) -> Iterator[Document]:
    """Conversations: each document's text is its messages as JSON (checked here)."""
    path = Path(corpus.location)
    for offset, line in _shuffled_lines(path, seed, epoch):
        try:
            messages = json.loads(line)["messages"]
            ok = isinstance(messages, list) and all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages)
        except (json.JSONDecodeError, KeyError, TypeError):
            ok = False
        if not ok:
            raise UserError(f"{path}: byte {offset} is not a conversation; each line must be "
                            "{\"messages\": [{\"role\": ..., \"content\": \"...\"}, ...]}")
        if any(m["role"] == "assistant" for m in messages):
            text = json.dumps(messages, ensure_ascii=False, sort_keys=True)
            yield Document(_content_key(text), text)


def _shuffled_lines(path: Path, seed: int, epoch: int) -> Iterator[tuple[int, bytes]]:
    """The file's non-blank lines (with their byte offsets) in this epoch's order."""
    offsets = _line_offsets(path)
    _epoch_rng(seed, epoch).shuffle(offsets)
    with path.open("rb") as f:
        for offset in offsets:
            f.seek(offset)
            yield offset, f.readline()


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
    "chat": _read_chat,
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


IGNORE = -100  # the label of a token that is not a target (PyTorch's ignore_index)
Labelled = tuple[list[int], list[int]]  # (ids, labels): a conversation's tokens, or a block of them


def pack_labelled(pairs: Iterable[Labelled], seq_len: int) -> Iterator[Labelled]:
    """`pack` for conversations: ids and labels cut together into blocks of `seq_len`."""
    ids: list[int] = []
    labels: list[int] = []
    for more_ids, more_labels in pairs:
        ids.extend(more_ids)
        labels.extend(more_labels)
        while len(ids) >= seq_len:
            yield ids[:seq_len], labels[:seq_len]
            del ids[:seq_len], labels[:seq_len]


def _packed(corpus: Corpus, tokens: Iterable, seq_len: int, eos_id: int) -> Iterator:
    return pack_labelled(tokens, seq_len) if corpus.kind == "chat" else pack(tokens, seq_len, eos_id)


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

    blocks = _packed(corpus, _tokens(all_epochs(), encode), seq_len, eos_id)
    return islice(shuffle_buffer(blocks, buffer, random.Random(f"blocks:{seed}")), skip, None)


def heldout_blocks(corpus: Corpus, encode: Callable[[str], list[int]], eos_id: int, seq_len: int,
                   n_blocks: int, per_document: int = 2) -> list[list[int]]:
    """Up to `n_blocks` packed blocks of held-out documents (fixed order: epoch 0, seed 0),
    at most `per_document` blocks' worth of tokens from each, so they span many files."""
    docs = split_documents(corpus, seed=0, epoch=0, heldout=True)
    keep = per_document * seq_len
    tokens = ((t[0][:keep], t[1][:keep]) if isinstance(t, tuple) else t[:keep] for t in _tokens(docs, encode))
    return list(islice(_packed(corpus, tokens, seq_len, eos_id), n_blocks))


def tokenizer_encoder(tokenizer) -> Callable[[str], list[int]]:
    """A transformers tokenizer as a plain `text → ids` function (no BOS/EOS added)."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return encode


def encoder_for(corpus: Corpus, tokenizer) -> Callable[[str], list[int] | Labelled]:
    """How a document of `corpus` becomes tokens: plain text (`tokenizer_encoder`), or a
    conversation rendered with the tokenizer's chat template (`conversation_tokens`)."""
    if corpus.kind != "chat":
        return tokenizer_encoder(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{corpus.location} holds conversations, and the model has no chat template to "
                        "render them with; train a chat model, or pass source files")
    return lambda text: conversation_tokens(tokenizer, json.loads(text))


def conversation_tokens(tokenizer, messages: list[dict]) -> Labelled:
    """A conversation's token ids under the chat template, with labels on the assistant's
    tokens only (IGNORE elsewhere). Each reply is the text its template writes between the
    conversation so far with the generation prompt and the conversation with that reply."""

    def rendered(upto: int, prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=prompt)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, after = rendered(k, True), rendered(k + 1, False)
        if not (before.startswith(done) and after.startswith(before)):
            raise UserError("the chat template does not render a conversation's prefixes as prefixes of it, "
                            "so its replies cannot be told apart from its prompts")
        prompt, reply = encode(before[len(done):]), encode(after[len(before):])
        ids += prompt + reply
        labels += [IGNORE] * len(prompt) + reply
        done = after
    return ids, labels

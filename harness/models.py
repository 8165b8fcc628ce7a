"""Models: the alias table, `from_pretrained` loading and the embedded `tiny` model.

`tiny` is StarCoder's architecture (GPTBigCode, multi-query attention) scaled down, with
random weights from a fixed seed and a byte-level tokenizer built in code, so it needs no
download. It scores about zero; it exists so the whole pipeline runs anywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UserError
from harness.hub import HubState, hub_state, quiet

ALIASES: dict[str, str] = {
    "starcoder-15b": "bigcode/starcoder",
    "starcoder": "bigcode/starcoder",
    "starcoderbase-3b": "bigcode/starcoderbase-3b",
    "starcoderbase-1b": "bigcode/starcoderbase-1b",
}
TINY = "tiny"
TINY_SEED = 1234
EOS = "<|endoftext|>"
# tiny's own chat template (a small Jinja one, so the instruct path runs in tests): each turn
# is `<|role|>` and its text on the next line; an assistant turn ends with the end of text.
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{%- if message['role'] == 'assistant' %}" + EOS + "{% endif %}\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<|assistant|>\n{% endif -%}"
)


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer and the name it is recorded under."""

    name: str  # what the user typed (alias, hub id, path or "tiny")
    source: str  # the resolved hub id or path ("builtin:tiny" for tiny)
    model: torch.nn.Module
    tokenizer: object  # a transformers PreTrainedTokenizerBase
    revision: str = ""  # hub commit, or "sha256:..." of a local directory or of tiny's weights
    dtype: str = ""  # the dtype the weights were loaded in ("float32", "bfloat16", ...)
    quantization: str = "none"  # "int8": base weights kept in 8 bits (bitsandbytes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def seeded(self) -> bool:
        """In-process generation draws every sample from its own seed (sampling.py)."""
        return True

    @property
    def device_type(self) -> str:
        """"cpu" or "cuda": what changes samples, not which card of a kind ran them."""
        return self.device.type


def resolve(name: str) -> str:
    """Map a model name to what `from_pretrained` takes; refuse what cannot be a model."""
    if name == TINY:
        return "builtin:tiny"
    if name in ALIASES:
        return ALIASES[name]
    if Path(name).exists():
        return str(Path(name).resolve())
    if "/" in name and not name.startswith((".", "/")):
        return name  # a hub id: org/name
    known = ", ".join([TINY, *ALIASES])
    raise UserError(
        f"unknown model {name!r}: use an alias ({known}), a hub id such as "
        "bigcode/starcoderbase-1b, or a local directory"
    )


def load_model(name: str, device: str | None = None, dtype: torch.dtype | None = None,
               load_8bit: bool = False) -> LoadedModel:
    """Load `name` in eval mode on `device` (default: cuda when available): bfloat16 on GPU,
    float32 on CPU; `load_8bit` keeps the base weights in 8 bits (bitsandbytes, GPU only)."""
    source = resolve(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    commit = ""  # the hub commit, when loaded from the hub's local cache
    if load_8bit:
        model, tokenizer, commit = _from_pretrained_8bit(name, source, device, dtype)
    elif source == "builtin:tiny":
        model, tokenizer = build_tiny()
        model = model.to(device=device, dtype=dtype)
    else:
        model, tokenizer, commit = _from_pretrained(name, source, dtype)
        model = model.to(device=device)
    return LoadedModel(name=name, source=source, model=model.eval(), tokenizer=tokenizer,
                       revision=commit or model_revision(source, model),
                       dtype=str(dtype).removeprefix("torch."), quantization="int8" if load_8bit else "none")


def model_revision(source: str, model: torch.nn.Module) -> str:
    """What identifies the weights: the hub commit transformers resolved, else a content
    hash of the local directory, and for tiny a hash of its weights."""
    if source == "builtin:tiny":
        return weights_digest(model)
    if Path(source).is_dir():
        return directory_digest(Path(source))
    return str(getattr(model.config, "_commit_hash", None) or "")


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode() + b"\0" + data.numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def directory_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def _from_pretrained(name: str, source: str, dtype: torch.dtype, **kwargs):
    """`from_pretrained` from a local directory or the hub. When the hub is switched off or
    cannot be reached (asked once, `harness.hub`), a hub id loads from its snapshot in the hub's
    local cache, as a directory (transformers' `local_files_only` still asks the hub for some
    files), and a model not there is one line instead of the libraries' retries. Returns the
    model, its tokenizer and the hub commit it was loaded at, when that is known here."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, commit = source, ""
    if not Path(source).is_dir() and not (hub := hub_state()).usable:
        where = _cached_snapshot(name, source, hub)
        commit = Path(where).name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load model {name!r} from {where} ({first[:160]}); "
            "check the name, log in with `hf auth login` for gated models, or pass a local path"
        ) from None
    return model, tokenizer, commit


def _cached_snapshot(name: str, source: str, hub: HubState) -> str:
    """The folder of `source`'s cached snapshot (its name is the commit), without the network."""
    from huggingface_hub import snapshot_download

    try:
        with quiet():
            return snapshot_download(source, local_files_only=True)
    except OSError:  # LocalEntryNotFoundError and kin
        undo = "unset it" if hub.switched_off else "connect to the hub"
        raise UserError(
            f"cannot load model {name!r}: {hub.why} and {source} is not in the local Hugging Face "
            f"cache; pass a local model directory (--model PATH), or {undo}"
        ) from None


def _from_pretrained_8bit(name: str, source: str, device: str, dtype: torch.dtype):
    """8-bit base weights, as the paper trained: GPU and bitsandbytes only."""
    if not device.startswith("cuda") or source == "builtin:tiny":
        raise UserError("--load-8bit needs a GPU and a hub or local model (not tiny); drop --load-8bit")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise UserError("--load-8bit needs bitsandbytes: pip install bitsandbytes, or drop it") from None
    return _from_pretrained(name, source, dtype, quantization_config=BitsAndBytesConfig(load_in_8bit=True),
                            device_map={"": device})


def tiny_config(vocab_size: int):
    """StarCoder's architecture (GPTBigCode, MQA, gelu_pytorch_tanh) at toy size."""
    from transformers import GPTBigCodeConfig

    return GPTBigCodeConfig(
        vocab_size=vocab_size,
        n_positions=2048,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_inner=256,
        multi_query=True,
        activation_function="gelu_pytorch_tanh",
        attn_pdrop=0.0,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )


def build_tiny():
    """The `tiny` model and tokenizer: same weights every time (fixed seed), no download."""
    from transformers import AutoModelForCausalLM

    tokenizer = byte_tokenizer()
    config = tiny_config(len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def byte_tokenizer():
    """A byte-level tokenizer (one token per byte, id 0 = end of text), built in code, with
    tiny's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {EOS: 0} | {ch: i + 1 for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=None
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer

"""A deterministic random Llama with a locally trained tokenizer: a model vLLM serves with no download.

Its text is gibberish; that does not matter. Greedy decoding makes the token ids deterministic, so a
disaggregated answer can be compared token for token with a single instance's. The size options make the
KV cache per token as large as a transfer or goodput benchmark needs.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

# A few sentences are enough for a byte-level BPE: every byte stays encodable.
_CORPUS = [
    "Disaggregated serving splits prefill and decode across instances.",
    "The prefill instance computes the KV cache of the prompt, block by block.",
    "The decode instance pulls the blocks over NIXL and generates one token per step.",
    "Goodput counts the requests per second that meet both the TTFT and the TPOT objective.",
    "A proxy chooses a prefill and a decode instance for every request.",
    "The quick brown fox jumps over the lazy dog; 0123456789 !?.,;:()[]{}<>'\"/\\|@#$%^&*-_+=~`",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the random model; defaults match the verified tiny Llama of REAL-VLLM-ON-CPU.md."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 32
    intermediate: int = 256
    vocab_size: int = 320
    max_position: int = 4096
    dtype: str = "float32"
    seed: int = 0
    # Larger than Llama's 0.02 so that greedy outputs vary with the context instead of repeating one token:
    # a comparison of degenerate outputs would prove nothing.
    initializer_range: float = 0.3

    def __post_init__(self) -> None:
        if self.head_dim not in (32, 64, 80, 96, 112, 128, 160, 192, 224, 256):
            raise ValueError(f"head_dim={self.head_dim}: vLLM's CPU attention needs 32, 64, 80, ... 256")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be a multiple of kv_heads={self.kv_heads}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype}: choose float32, bfloat16 or float16")
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "max_position"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def kv_bytes_per_token(self) -> int:
        itemsize = 4 if self.dtype == "float32" else 2
        return 2 * self.layers * self.kv_heads * self.head_dim * itemsize


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None, **overrides) -> Path:
    """Write a random Llama and its tokenizer to ``out_dir``; the same spec always gives the same files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = spec or TinyModelSpec(**overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(spec.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=spec.initializer_range,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).to(getattr(torch, spec.dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "vllm_pd_tiny_model.json").write_text(json.dumps(asdict(spec), indent=2))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TinyModelSpec()
    parser.add_argument("dir", type=Path, help="output directory")
    for field_name, help_text in [
        ("layers", "decoder layers"),
        ("hidden", "hidden size"),
        ("heads", "attention heads"),
        ("kv_heads", "KV heads (grouped-query attention)"),
        ("head_dim", "head dimension (CPU attention: 32, 64, ... 256)"),
        ("intermediate", "MLP intermediate size"),
        ("max_position", "max position embeddings (the model's context length)"),
        ("seed", "random seed for the weights"),
    ]:
        flag = "--" + field_name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, field_name), help=help_text)
    parser.add_argument("--dtype", default=defaults.dtype, choices=["float32", "bfloat16", "float16"])


def run(args: argparse.Namespace) -> int:
    try:
        spec = TinyModelSpec(
            layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
            head_dim=args.head_dim, intermediate=args.intermediate, max_position=args.max_position,
            dtype=args.dtype, seed=args.seed,
        )
    except ValueError as exc:
        raise SystemExit(f"vllm-pd make-tiny-model: error: {exc}") from None
    out = make_tiny_model(args.dir, spec)
    print(f"wrote {out} ({spec.kv_bytes_per_token()} KV bytes per token)")
    return 0

"""A model's shape from its Hugging Face ``config.json``: parameter bytes, FLOPs and KV bytes per token.

The arithmetic covers the decoder families vLLM serves most (Llama, Mistral, Mixtral and other MoE
with one expert MLP per layer, Qwen2/3, OPT, GPT-2-like with learned positions). Unknown model types
are read with the Llama field names; a config missing a needed field is an error naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8": 1}
_OPT_POSITION_OFFSET = 2  # OPT's learned position table has two extra rows


class ModelSpecError(ValueError):
    """A config that cannot describe a servable model."""


@dataclass(frozen=True)
class ModelSpec:
    """The sizes that decide memory and FLOPs; everything else in config.json is irrelevant here."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: int = 2
    gated_mlp: bool = True  # SwiGLU: gate, up and down projections; otherwise fc1 and fc2
    biases: bool = False  # OPT/GPT-2: every linear and norm has a bias
    qkv_bias: bool = False  # Qwen2: biases on q, k and v only
    num_experts: int = 1
    experts_per_token: int = 1
    tied_embeddings: bool = False
    learned_positions: int = 0  # rows of a learned position table (0: rotary)
    max_model_len: int = 4096
    serve_as: str = ""  # what to pass to ``vllm serve``: a Hugging Face id or the model directory

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                      "vocab_size", "dtype_bytes", "num_experts", "experts_per_token", "max_model_len"):
            if getattr(self, field) < 1:
                raise ModelSpecError(f"{self.name}: {field} must be positive, got {getattr(self, field)}")
        if self.num_heads % self.num_kv_heads:
            raise ModelSpecError(f"{self.name}: {self.num_heads} heads do not divide into {self.num_kv_heads} KV heads")
        if self.experts_per_token > self.num_experts:
            raise ModelSpecError(f"{self.name}: experts_per_token exceeds num_experts")

    # ---- parameters
    def attention_params(self) -> int:
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        weights = self.hidden_size * (q + 2 * kv) + q * self.hidden_size
        if self.biases:
            return weights + q + 2 * kv + self.hidden_size
        return weights + (q + 2 * kv if self.qkv_bias else 0)

    def expert_params(self) -> int:
        """One expert MLP (or the dense MLP)."""
        h, i = self.hidden_size, self.intermediate_size
        if self.gated_mlp:
            return 3 * h * i
        return 2 * h * i + (i + h if self.biases else 0)

    def layer_params(self, experts: int | None = None) -> int:
        """One decoder layer with ``experts`` expert MLPs (default all), its norms and its router."""
        experts = self.num_experts if experts is None else experts
        norms = 2 * self.hidden_size * (2 if self.biases else 1)
        router = self.hidden_size * self.num_experts if self.num_experts > 1 else 0
        return self.attention_params() + experts * self.expert_params() + norms + router

    def embedding_params(self) -> int:
        table = self.vocab_size * self.hidden_size
        head = 0 if self.tied_embeddings else table
        final_norm = self.hidden_size * (2 if self.biases else 1)
        return table + head + self.learned_positions * self.hidden_size + final_norm

    def param_count(self) -> int:
        return self.num_layers * self.layer_params() + self.embedding_params()

    def active_param_count(self) -> int:
        """Parameters touched per token (MoE: only the routed experts)."""
        return self.num_layers * self.layer_params(self.experts_per_token) + self.embedding_params()

    def param_bytes(self) -> int:
        return self.param_count() * self.dtype_bytes

    # ---- KV cache and FLOPs
    def kv_bytes_per_token(self) -> int:
        """K and V for every layer: 2 x layers x kv_heads x head_dim x dtype bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def linear_flops_per_token(self) -> float:
        """Matrix-multiply FLOPs per token outside attention scores (lm_head excluded: once per sequence)."""
        body = self.num_layers * (self.attention_params() + self.experts_per_token * self.expert_params())
        return 2.0 * body

    def attention_flops_per_pair(self) -> float:
        """FLOPs for one (query, key) pair over all layers: QK^T and AV, multiply-add each."""
        return 4.0 * self.num_layers * self.num_heads * self.head_dim

    def lm_head_flops(self) -> float:
        return 2.0 * self.vocab_size * self.hidden_size


def builtin_models() -> list[str]:
    """Names of the configs shipped in ``vllm_pd/data/models`` (usable instead of a path)."""
    folder = resources.files("vllm_pd").joinpath("data/models")
    return sorted(entry.name.removesuffix(".json") for entry in folder.iterdir() if entry.name.endswith(".json"))


def load_model_spec(name_or_path: str | Path, *, dtype: str | None = None, max_model_len: int | None = None) -> ModelSpec:
    """Read a ``config.json``, the directory holding one, or a built-in config by name (``llama-3-8b``)."""
    path = Path(name_or_path)
    if str(name_or_path) in builtin_models():
        config = json.loads(resources.files("vllm_pd").joinpath(f"data/models/{name_or_path}.json").read_text())
        spec = model_spec_from_config(config, name=str(name_or_path), dtype=dtype, max_model_len=max_model_len)
        return replace(spec, serve_as=config.get("_name_or_path", str(name_or_path)))
    name = path.name if path.is_dir() else path.parent.name if path.name == "config.json" else path.stem
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelSpecError(
            f"{path}: no such model config (give a config.json, the directory holding one, "
            f"or one of {', '.join(builtin_models())})"
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: not valid JSON: {exc}") from exc
    spec = model_spec_from_config(config, name=name, dtype=dtype, max_model_len=max_model_len)
    return replace(spec, serve_as=str(path.parent))


def model_spec_from_config(
    config: dict, *, name: str = "model", dtype: str | None = None, max_model_len: int | None = None
) -> ModelSpec:
    """A :class:`ModelSpec` from a parsed ``config.json``; ``dtype`` overrides the config's."""
    config = config.get("text_config", config)  # multimodal wrappers keep the LM shape here
    if config.get("model_type") == "opt":
        return _opt_spec(config, name, dtype, max_model_len)

    def need(*keys: str) -> int:
        for key in keys:
            if config.get(key) is not None:
                return int(config[key])
        raise ModelSpecError(f"{name}: config.json lacks {' or '.join(keys)}")

    hidden, heads = need("hidden_size", "n_embd", "d_model"), need("num_attention_heads", "n_head")
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    intermediate = need("moe_intermediate_size", "intermediate_size") if experts > 1 else need("intermediate_size")
    model_type = config.get("model_type", "")
    return ModelSpec(
        name=name,
        num_layers=need("num_hidden_layers", "n_layer"),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate_size=intermediate,
        vocab_size=need("vocab_size"),
        dtype_bytes=_dtype_bytes(dtype or config.get("torch_dtype") or config.get("dtype") or "bfloat16", name),
        qkv_bias=bool(config.get("attention_bias")) or model_type == "qwen2" or model_type == "qwen2_moe",
        num_experts=experts,
        experts_per_token=int(config.get("num_experts_per_tok") or 1),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        max_model_len=max_model_len or int(config.get("max_position_embeddings") or 4096),
    )


def _opt_spec(config: dict, name: str, dtype: str | None, max_model_len: int | None) -> ModelSpec:
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    if int(config.get("word_embed_proj_dim", hidden)) != hidden:
        raise ModelSpecError(f"{name}: OPT with a projected embedding (opt-350m) is not supported")
    positions = int(config["max_position_embeddings"])
    return ModelSpec(
        name=name,
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        intermediate_size=int(config["ffn_dim"]),
        vocab_size=int(config["vocab_size"]),
        dtype_bytes=_dtype_bytes(dtype or config.get("torch_dtype") or "float16", name),
        gated_mlp=False,
        biases=True,
        tied_embeddings=bool(config.get("tie_word_embeddings", True)),
        learned_positions=positions + _OPT_POSITION_OFFSET,
        max_model_len=max_model_len or positions,
    )


def _dtype_bytes(dtype: str, name: str) -> int:
    key = str(dtype).removeprefix("torch.")
    if key not in DTYPE_BYTES:
        raise ModelSpecError(f"{name}: unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[key]

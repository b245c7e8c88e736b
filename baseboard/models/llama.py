"""Llama-family decoder (Llama, Qwen2, Mistral, SmolLM) written against the op interfaces.

Every op runs through the plan: rms_norm, fused_add_rms_norm, rotary_embedding,
silu_and_mul, the GEMM ops (q/k/v and gate/up fused into one GEMM each) and attention.
Where the plan fuses an op into another (``Plan.fused``), the layer calls the fused form
instead of the two: rotary_embedding inside attention's ``forward_rotary``, silu_and_mul
inside the down projection's ``apply_silu_and_mul``, and the residual add + RMSNorm inside
the q/k/v and gate/up projections' ``apply_add_rms_norm``.
Plan lookups and weight preparation happen once, at load; a forward step is the ops and a
few views.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F

from ..core.errors import ModelError
from ..core.selection import Plan
from ..distributed.sharding import local_config
from ..quantization.records import QuantizedWeight, can_concat, concat_rows
from .config import ModelConfig
from .linear import Linear, NormedLinear, Weight, fuses, make_linear
from .rope import rope_cache

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers some old checkpoints saved
# the linear layers of a decoder layer whose weights are stacked into one GEMM (``fuse``)
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
GATE_UP = ("mlp.gate_proj", "mlp.up_proj")
FUSED = (QKV, GATE_UP)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``config`` holds, by Hugging Face name, with its shape."""
    hidden, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    q_size = config.num_heads * config.head_dim
    kv_size = config.num_kv_heads * config.head_dim
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (q_size, hidden),
            p + "self_attn.k_proj.weight": (kv_size, hidden),
            p + "self_attn.v_proj.weight": (kv_size, hidden),
            p + "self_attn.o_proj.weight": (hidden, q_size),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
        if config.qkv_bias:
            shapes.update({p + "self_attn.q_proj.bias": (q_size,),
                           p + "self_attn.k_proj.bias": (kv_size,),
                           p + "self_attn.v_proj.bias": (kv_size,)})
        if config.o_proj_bias:
            shapes[p + "self_attn.o_proj.bias"] = (hidden,)
    return shapes


def fuse(parts: list[Weight], dtype: torch.dtype) -> Weight:
    """Stack weights along N. Quantized parts of one format stay quantized; a mix of
    formats becomes one dense weight in ``dtype``."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts)
    if can_concat(parts):
        return concat_rows(parts)
    return torch.cat([p.dequantize().to(dtype) if isinstance(p, QuantizedWeight) else p
                      for p in parts])


def fused_linear_ops(ops: dict[str, str]) -> tuple[str, ...]:
    """The GEMM ops the linear layers call, sorted, from the op each weight (by Hugging Face
    name) would call alone. As in ``fuse``: the parts of a fused layer keep their op when
    they all have it; a mix becomes one dense weight, which calls "gemm"."""
    layers: dict[str, set[str]] = {}
    for name, op in ops.items():
        module = name.removesuffix(".weight")
        for group in FUSED:
            member = next((m for m in group if module.endswith("." + m)), None)
            if member:  # model.layers.3.mlp.up_proj -> model.layers.3.mlp.gate_proj+mlp.up_proj
                module = module[:-len(member)] + "+".join(group)
        layers.setdefault(module, set()).add(op)
    return tuple(sorted({next(iter(o)) if len(o) == 1 else "gemm" for o in layers.values()}))


class DecoderLayer:
    """Pre-norm attention + SwiGLU MLP, with the residual stream carried between layers."""

    def __init__(self, config: ModelConfig, plan: Plan, attention: Any,
                 weights: dict[str, Weight], dtype: torch.dtype, cos_sin_cache: torch.Tensor,
                 parallel: Optional[Any] = None):
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        q_size = config.num_heads * config.head_dim
        kv_size = config.num_kv_heads * config.head_dim
        self.qkv_sizes = [q_size, kv_size, kv_size]
        self.eps = config.rms_norm_eps
        self.cos_sin_cache = cos_sin_cache
        self.rms_norm = plan.rms_norm
        self.fused_add_rms_norm = plan.fused_add_rms_norm
        self.rotary_embedding = plan.rotary_embedding
        self.silu_and_mul = plan.silu_and_mul
        self.attend = attention.forward
        # rotary in the KV-cache write: one kernel fewer per layer
        self.attend_rotary = attention.forward_rotary if plan.fused("rotary_embedding") \
            else None

        w = weights
        qkv_bias = torch.cat([w[f"{m}.bias"] for m in QKV]) if config.qkv_bias else None
        qkv = fuse([w[f"{m}.weight"] for m in QKV], dtype)
        self.qkv_proj: Linear = make_linear(plan, qkv, qkv_bias)
        # the residual add + RMSNorm in the projection's input load (not in the first
        # layer, which has no residual yet): one kernel fewer per norm
        self.normed_qkv_proj = NormedLinear(plan, self.qkv_proj) \
            if fuses(plan, "fused_add_rms_norm", qkv) else None
        self.o_proj: Linear = make_linear(plan, w["self_attn.o_proj.weight"],
                                          w.get("self_attn.o_proj.bias"))
        gate_up = fuse([w[f"{m}.weight"] for m in GATE_UP], dtype)
        self.gate_up_proj: Linear = make_linear(plan, gate_up, None)
        self.normed_gate_up_proj = NormedLinear(plan, self.gate_up_proj) \
            if fuses(plan, "fused_add_rms_norm", gate_up) else None
        down = w["mlp.down_proj.weight"]
        # silu_and_mul in the down projection's input load: one kernel fewer per layer
        self.down_fuses_silu = fuses(plan, "silu_and_mul", down)
        self.down_proj: Linear = make_linear(plan, down, None, gated=self.down_fuses_silu)
        if parallel is not None:  # row-parallel: each rank's partial sums, all-reduced
            self.o_proj = parallel.reduced(self.o_proj)
            self.down_proj = parallel.reduced(self.down_proj)
        self.input_norm: torch.Tensor = w["input_layernorm.weight"]
        self.post_attention_norm: torch.Tensor = w["post_attention_layernorm.weight"]

    def __call__(self, positions: torch.Tensor, hidden: torch.Tensor,
                 residual: Optional[torch.Tensor], kv_cache: torch.Tensor,
                 metadata: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden, residual [T, hidden] -> (this layer's output, the residual stream)."""
        if residual is None:
            residual = hidden
            qkv = self.qkv_proj(self.rms_norm(hidden, self.input_norm, self.eps))
        elif self.normed_qkv_proj is not None:
            qkv, residual = self.normed_qkv_proj(hidden, residual, self.input_norm, self.eps)
        else:
            hidden, residual = self.fused_add_rms_norm(hidden, residual, self.input_norm,
                                                       self.eps)
            qkv = self.qkv_proj(hidden)
        tokens = qkv.shape[0]
        q, k, v = qkv.split(self.qkv_sizes, dim=-1)
        q = q.view(tokens, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = k.view(tokens, self.num_kv_heads, self.head_dim)  # [T, Hk, D]
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        if self.attend_rotary is not None:
            attn = self.attend_rotary(positions, q, k, v, self.cos_sin_cache, kv_cache,
                                      metadata)  # [T, Hq, D]
        else:
            q, k = self.rotary_embedding(positions, q, k, self.cos_sin_cache)
            attn = self.attend(q, k, v, kv_cache, metadata)  # [T, Hq, D]
        hidden = self.o_proj(attn.reshape(tokens, -1))
        if self.normed_gate_up_proj is not None:
            gate_up, residual = self.normed_gate_up_proj(hidden, residual,
                                                         self.post_attention_norm, self.eps)
        else:
            hidden, residual = self.fused_add_rms_norm(hidden, residual,
                                                       self.post_attention_norm, self.eps)
            gate_up = self.gate_up_proj(hidden)  # [T, 2I]
        if self.down_fuses_silu:
            return self.down_proj(gate_up), residual
        return self.down_proj(self.silu_and_mul(gate_up)), residual


class LlamaForCausalLM:
    """A Llama-family causal LM; weights arrive through ``load_weights``. ``parallel``: this
    rank's ``baseboard.distributed.TensorParallel`` (None for one device)."""

    def __init__(self, config: ModelConfig, plan: Plan, attention: Any, dtype: torch.dtype,
                 device: torch.device | str, parallel: Optional[Any] = None):
        self.config = config
        self.parallel = parallel
        # what this rank's layers hold: its heads and intermediate features
        self.layer_config = config if parallel is None else local_config(config, parallel.shard)
        self.plan = plan
        self.attention = attention
        self.dtype = dtype
        self.device = torch.device(device)
        self.cos_sin_cache = rope_cache(config, self.device)  # [max_pos, head_dim] float32
        self.fused_add_rms_norm = plan.fused_add_rms_norm
        self.layers: list[DecoderLayer] = []
        self.embed_tokens: Optional[torch.Tensor] = None  # [vocab, hidden]
        self.norm: Optional[torch.Tensor] = None
        self.lm_head: Optional[Linear] = None

    def _to_device(self, weight: Weight) -> Weight:
        if isinstance(weight, QuantizedWeight):
            return weight.to(self.device)
        return weight.to(device=self.device, dtype=self.dtype)

    def _collect(self, weights: Iterable[tuple[str, Weight]]) -> dict[str, Weight]:
        expected = expected_shapes(self.config)
        loaded: dict[str, Weight] = {}
        seen: set[str] = set()
        for name, weight in weights:
            if name.endswith(IGNORED_SUFFIXES):
                continue
            if name not in expected:
                raise ModelError(
                    f"the checkpoint has tensor {name!r}, which a {self.config.architecture} "
                    f"with this config does not have. The checkpoint does not match its config "
                    f"(or holds a part this model does not implement).")
            if tuple(weight.shape) != expected[name]:
                raise ModelError(
                    f"tensor {name!r} has shape {tuple(weight.shape)}, but the config "
                    f"(hidden_size {self.config.hidden_size}, heads {self.config.num_heads}, "
                    f"kv heads {self.config.num_kv_heads}, head_dim {self.config.head_dim}, "
                    f"intermediate_size {self.config.intermediate_size}, vocab_size "
                    f"{self.config.vocab_size}) implies {expected[name]}.")
            seen.add(name)
            if self.parallel is not None:  # cut before the device: it holds only the shard
                weight = self.parallel.shard_tensor(name, weight, self.config)
                if weight is None:
                    continue
            loaded[name] = self._to_device(weight)
        optional = {"lm_head.weight"} if self.config.tie_word_embeddings else set()
        missing = [n for n in expected if n not in seen and n not in optional]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ModelError(f"the checkpoint lacks tensor(s) {shown}{more} that the config "
                             f"({self.config.num_layers} layers) requires.")
        return loaded

    def load_weights(self, weights: Iterable[tuple[str, Weight]]) -> None:
        """Move each weight to the device once, fuse q/k/v and gate/up and prepare every
        linear layer. A missing, unexpected or wrongly shaped tensor is a ModelError."""
        loaded = self._collect(weights)
        embed = loaded.pop("model.embed_tokens.weight")
        if isinstance(embed, QuantizedWeight):
            embed = embed.dequantize().to(self.dtype)
        self.embed_tokens = embed
        self.norm = loaded.pop("model.norm.weight")
        # A tied checkpoint may still carry lm_head.weight (GGUF: the quantized embedding,
        # which the GEMM reads faster than the dequantized one).
        self.lm_head = make_linear(self.plan, loaded.pop("lm_head.weight", embed), None)
        self.layers = []
        for i in range(self.config.num_layers):
            prefix = f"model.layers.{i}."
            layer_weights = {name[len(prefix):]: loaded.pop(name)
                             for name in [n for n in loaded if n.startswith(prefix)]}
            self.layers.append(DecoderLayer(self.layer_config, self.plan, self.attention,
                                            layer_weights, self.dtype, self.cos_sin_cache,
                                            self.parallel))

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[torch.Tensor], metadata: Any) -> torch.Tensor:
        """input_ids, positions [T] int64; one KV cache per layer -> final hidden [T, hidden]."""
        if self.parallel is None:
            hidden = F.embedding(input_ids, self.embed_tokens)
        else:  # vocab-parallel: this rank's rows, summed over ranks
            hidden = self.parallel.embed(input_ids, self.embed_tokens)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches):
            hidden, residual = layer(positions, hidden, residual, kv_cache, metadata)
        hidden, _ = self.fused_add_rms_norm(hidden, residual, self.norm, self.config.rms_norm_eps)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [n, hidden] -> logits [n, vocab] float32, unrounded: in bf16 close logits
        tie (SmolLM2 answers 'L'Étoile' instead of 'The capital ... is Paris')."""
        logits = self.lm_head(hidden, torch.float32)
        if self.parallel is None:
            return logits
        return self.parallel.gather_logits(logits, self.config.vocab_size)  # vocab-parallel

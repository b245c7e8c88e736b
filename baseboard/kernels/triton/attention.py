"""Paged attention in Triton: the ``attention`` op's implementation.

Same cache layout as the reference, [2, num_blocks, block_size, Hk, D]: each token's head
is D contiguous values, which the kernels read as whole rows. A head-major layout
[2, num_blocks, Hk, block_size, D] (each block's head one contiguous run) measured no
faster (docs/benchmarks.md, "Measurements behind the code"), so the reference layout stays.

A step runs up to four kernels: the KV write (with the rotary embedding, in
``forward_rotary``), split decode and its merge (the decodes come
first in the batch), and prefill (the rest: over the paged cache when a prefill has a cached
prefix or the step replays a CUDA graph, else over the step's own keys and values, which
reads faster; over the cache, blocks of a multiple of 64 tokens are read a whole tile at a
time, smaller ones gathered key by key). Per-step metadata
lives in persistent device buffers sized by ``max_num_seqs`` and ``max_model_len``, filled
by one host-to-device copy of int32 values and one of the slot mapping; a decode step's
launches depend on its number of sequences alone, so a captured CUDA graph of it can be
replayed over later steps of the same size. The metadata are views into those buffers, so
they are valid until the next ``build_metadata``; ``forward`` refuses older ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

import torch
import triton

from ...core.attention import AttentionBatch, AttentionSpec, check_metadata_current
from ...core.errors import ConfigError
from .common import last_dim_contiguous, upcast_dots
from .decode import (DECODE_CONFIG, DecodeConfig, decode_attention, decode_splits,
                     decode_workspace_rows)
from .device_tables import table_for
from .kv_cache import rotary_write_kv, write_kv
from .prefill import PrefillConfig, prefill_attention, prefill_config
from .prefill_tiled import (TILED_PAGE, dense_prefill_attention, paged_tile_config,
                            paged_tile_prefill_attention)
from .records import BLOCK_SIZES, HEAD_SIZES, INTERPRETER_HEAD_SIZES, interpreting

PROGRAMS_PER_MULTIPROCESSOR = 4  # decode splits until about this many programs per SM run


@dataclass
class TritonAttentionMetadata:
    num_tokens: int
    num_decodes: int  # the first num_decodes sequences, one token each
    decode_splits: int  # context partitions per decode sequence
    slot_mapping: torch.Tensor  # [T] int64
    seq_lens: torch.Tensor  # [B] int32 context lengths
    prefill_query_start: torch.Tensor  # [B - num_decodes + 1] int32, from the first prefill
    block_tables: torch.Tensor  # [B, max_blocks] int32
    dense_prefill: bool  # every prefill starts at position 0 and the step is not graphed
    build: int  # which build_metadata call made these: only the latest one's are valid


def _device_table(device: torch.device):
    """The device's tile table (device_tables.py); None under the interpreter."""
    return None if interpreting() or device.type != "cuda" else table_for(device)


def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    if device.type == "xpu":
        return getattr(torch.xpu.get_device_properties(device), "gpu_subslice_count", 64)
    return 4  # the interpreter: any count exercises the same code


class TritonAttention:
    """Paged attention with Triton kernels (see the module doc)."""

    def __init__(self, spec: AttentionSpec):
        sizes = HEAD_SIZES + (INTERPRETER_HEAD_SIZES if interpreting() else ())
        if spec.head_dim not in sizes or spec.block_size not in BLOCK_SIZES \
                or spec.num_heads % spec.num_kv_heads:
            raise ConfigError(
                f"Triton attention supports head sizes {sizes} and block sizes {BLOCK_SIZES} "
                f"with query heads a multiple of KV heads; got head_dim={spec.head_dim}, "
                f"block_size={spec.block_size}, {spec.num_heads} query / {spec.num_kv_heads} KV "
                f"heads. Choose another attention backend (--backend attention=torch).")
        self.spec = spec
        d_pad = triton.next_power_of_2(spec.head_dim)
        group_pad = triton.next_power_of_2(spec.num_heads // spec.num_kv_heads)
        # blocks holding whole key tiles are read a tile at a time, smaller ones gathered
        table = _device_table(spec.device)
        if spec.block_size % TILED_PAGE == 0:
            self.paged_prefill = paged_tile_prefill_attention
            tile = table.get("prefill", f"paged-D{d_pad}") if table else None
            self.prefill_config = PrefillConfig(*tile) if tile else paged_tile_config(spec.head_dim)
        else:
            self.paged_prefill = prefill_attention
            self.prefill_config = prefill_config(d_pad, group_pad)
        # [block_n, num_warps, num_stages, max_splits, programs per SM] from the device's table
        decode = table.get("decode", f"D{d_pad}") if table else None
        self.decode_config = DecodeConfig(*decode[:4]) if decode else DECODE_CONFIG
        per_sm = decode[4] if decode else PROGRAMS_PER_MULTIPROCESSOR
        self.decode_programs = per_sm * _multiprocessors(spec.device)
        self.qk_scale = spec.scale * math.log2(math.e)
        self.upcast = upcast_dots(spec.dtype)
        self.max_blocks = triton.cdiv(spec.max_model_len, spec.block_size)
        seqs = spec.max_num_seqs
        # int32 buffer: seq_lens [S] | prefill query starts [S + 1] | block tables [S, W]
        self._header = 2 * seqs + 1
        self._ints = torch.zeros(self._header + seqs * self.max_blocks, dtype=torch.int32,
                                 device=spec.device)
        self._slots = torch.zeros(max(seqs, spec.max_graph_tokens), dtype=torch.int64,
                                  device=spec.device)
        # Host staging for the two copies, pinned so they run asynchronously; written with
        # numpy, far cheaper than torch CPU ops at these sizes (docs/benchmarks.md). A
        # buffer is written again only once the copy that read it has finished (_copied).
        pinned = spec.device.type == "cuda"
        self._ints_host = torch.zeros(self._ints.numel(), dtype=torch.int32, pin_memory=pinned)
        self._slots_host = torch.zeros(self._slots.numel(), dtype=torch.int64,
                                       pin_memory=pinned)
        self._copied = torch.cuda.Event() if pinned else None
        self._builds = 0  # build_metadata calls so far; metadata of an earlier one are stale
        self._workspace: tuple[torch.Tensor, ...] = ()
        self._reserve_workspace(decode_workspace_rows(
            seqs, spec.num_kv_heads, self.decode_config, self.decode_programs))

    def _reserve_workspace(self, seq_partitions: int) -> None:
        """Room for the decode partials of ``seq_partitions`` (sequence, partition) pairs;
        sized at construction for any batch, so it grows only if the tuning is changed."""
        rows = seq_partitions * self.spec.num_heads
        if self._workspace and self._workspace[1].numel() >= rows:
            return
        d_pad, device = triton.next_power_of_2(self.spec.head_dim), self.spec.device
        self._workspace = (torch.empty(rows * d_pad, dtype=torch.float32, device=device),
                           torch.empty(rows, dtype=torch.float32, device=device),
                           torch.empty(rows, dtype=torch.float32, device=device))

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        return self.spec.standard_kv_cache_shape(num_blocks)

    def build_metadata(self, batch: AttentionBatch) -> TritonAttentionMetadata:
        """Host work is O(sequences + blocks) in numpy, then two asynchronous copies."""
        s = self.spec
        num_seqs, num_tokens = len(batch.query_lens), len(batch.slot_mapping)
        counts = [len(table) for table in batch.block_tables]
        if num_seqs > s.max_num_seqs or max(counts, default=0) > self.max_blocks:
            raise ConfigError(
                f"a step of {num_seqs} sequences with up to {max(counts, default=0)} blocks "
                f"exceeds the attention buffers (max_num_seqs={s.max_num_seqs}, "
                f"{self.max_blocks} blocks = max_model_len {s.max_model_len}). Raise "
                f"max_num_seqs / max_model_len or schedule smaller steps.")
        num_decodes = batch.num_decodes
        header, width = self._header, self.max_blocks
        if self._copied is not None:
            self._copied.synchronize()
        size = header + num_seqs * width
        ints = self._ints_host.numpy()[:size]
        ints.fill(0)
        ints[:num_seqs] = batch.context_lens
        starts = [0, *accumulate(batch.query_lens[num_decodes:])]
        ints[s.max_num_seqs:s.max_num_seqs + len(starts)] = starts
        for row, table in enumerate(batch.block_tables):
            ints[header + row * width:header + row * width + len(table)] = table
        self._ints[:size].copy_(self._ints_host[:size], non_blocking=True)
        if num_tokens <= self._slots.numel():  # the persistent buffers (graphed steps)
            self._slots_host.numpy()[:num_tokens] = batch.slot_mapping
            slot_mapping = self._slots[:num_tokens]
            slot_mapping.copy_(self._slots_host[:num_tokens], non_blocking=True)
        else:  # a longer (prefill) step gets its own
            slot_mapping = torch.tensor(batch.slot_mapping, dtype=torch.int64,
                                        pin_memory=self._copied is not None).to(
                s.device, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        graphed = s.cuda_graphs and num_tokens <= s.max_graph_tokens
        splits = decode_splits(num_decodes, s.num_kv_heads, self.decode_config,
                               self.decode_programs)
        self._reserve_workspace(num_decodes * splits)
        self._builds += 1
        buf = self._ints
        return TritonAttentionMetadata(
            num_tokens=num_tokens, num_decodes=num_decodes, decode_splits=splits,
            slot_mapping=slot_mapping,
            seq_lens=buf[:num_seqs],
            prefill_query_start=buf[s.max_num_seqs:s.max_num_seqs + len(starts)],
            block_tables=buf[header:header + s.max_num_seqs * width].view(-1, width)[:num_seqs],
            dense_prefill=batch.prefills_from_start and not graphed, build=self._builds)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: TritonAttentionMetadata) -> torch.Tensor:
        """q [T, Hq, D], k, v [T, Hk, D] (strided views are fine) -> [T, Hq, D]."""
        check_metadata_current(metadata.build, self._builds,
                               "overwrote the buffers they are views into")
        q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
        write_kv(k, v, kv_cache, metadata.slot_mapping)
        return self._attend(q, k, v, kv_cache, metadata)

    def forward_rotary(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor, cos_sin_cache: torch.Tensor, kv_cache: torch.Tensor,
                       metadata: TritonAttentionMetadata) -> torch.Tensor:
        """``forward`` of q and k rotated at positions [T] (cos_sin_cache [max_pos, D]
        float32): the rotation happens in the KV-cache write's kernel."""
        check_metadata_current(metadata.build, self._builds,
                               "overwrote the buffers they are views into")
        q, k = rotary_write_kv(positions, q, k, v, cos_sin_cache, kv_cache,
                               metadata.slot_mapping)
        return self._attend(q, k, last_dim_contiguous(v), kv_cache, metadata)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: TritonAttentionMetadata) -> torch.Tensor:
        """Attention of q over the cache that already holds this step's k and v."""
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        num_decodes = metadata.num_decodes
        if num_decodes:
            decode_attention(q, out, kv_cache, metadata.block_tables[:num_decodes],
                             metadata.seq_lens[:num_decodes], metadata.decode_splits,
                             self._workspace, self.qk_scale, self.decode_config, self.upcast)
        if metadata.num_tokens > num_decodes and metadata.dense_prefill:
            dense_prefill_attention(q, k, v, out, metadata.prefill_query_start,
                                    metadata.seq_lens.shape[0] - num_decodes,
                                    metadata.num_tokens - num_decodes, num_decodes,
                                    self.qk_scale, self.upcast)
        elif metadata.num_tokens > num_decodes:
            self.paged_prefill(q, out, kv_cache, metadata.block_tables[num_decodes:],
                               metadata.prefill_query_start, metadata.seq_lens[num_decodes:],
                               metadata.num_tokens - num_decodes, num_decodes, self.qk_scale,
                               self.prefill_config, self.upcast)
        return out

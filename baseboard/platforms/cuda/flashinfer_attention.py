"""FlashInfer's paged attention as an implementation of the ``attention`` op.

Imported only when selected; its record (plugin.py) lists it only where the
``flashinfer-python`` distribution is installed. The cache keeps baseboard's layout,
[2, num_blocks, block_size, Hk, D]: each half is FlashInfer's "NHD" paged layout, so the
KV write stays baseboard's Triton kernel. A step runs up to three FlashInfer kernels, each
planned once per step on the host: decodes (the tensor-core decode), prefills that start at
position 0 over the step's own keys and values (ragged), and prefills over a cached prefix
(paged). FlashInfer compiles each kernel with nvcc on first use (minutes), then caches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import flashinfer
import torch

from ...core.attention import AttentionBatch, AttentionSpec, check_metadata_current
from ...kernels.triton.common import last_dim_contiguous
from ...kernels.triton.kv_cache import write_kv

WORKSPACE_BYTES = 128 << 20  # FlashInfer's recommended split-KV scratch, shared by its kernels


@dataclass
class FlashInferMetadata:
    num_tokens: int
    num_decodes: int
    slot_mapping: torch.Tensor  # [T] int64
    ragged_prefill: bool  # every prefill starts at position 0: read the step's own k, v
    build: int  # which build_metadata call planned these: only the latest plans are kept


class FlashInferAttention:
    """Paged attention through FlashInfer (see the module doc). Its record (plugin.py)
    admits it for head sizes 64, 128, 256 in bfloat16 and float16, and not in CUDA-graph
    mode: the plans are host work per step."""

    def __init__(self, spec: AttentionSpec):
        self.spec = spec
        # FlashAttention-3 kernels on Hopper; FlashInfer's FA2 kernels elsewhere
        hopper = torch.cuda.get_device_capability(spec.device)[0] == 9
        backend = "fa3" if hopper else "fa2"
        workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=spec.device)
        self._decode = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
            workspace, "NHD", use_tensor_cores=True)
        self._ragged = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(
            workspace, "NHD", backend=backend)
        self._paged = flashinfer.BatchPrefillWithPagedKVCacheWrapper(
            workspace, "NHD", backend=backend)
        # Each plan stages its tables in pinned host memory and copies them asynchronously:
        # the next step's plans must wait until this step's copies have run.
        self._copied = torch.cuda.Event()
        self._builds = 0  # each build re-plans the wrappers: older metadata are stale

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        return self.spec.standard_kv_cache_shape(num_blocks)

    def _pages(self, batch: AttentionBatch, seqs: slice):
        """(indptr on the host, page ids on the device, last page fill on the host)."""
        tables = batch.block_tables[seqs]
        indptr = torch.tensor([0, *accumulate(len(t) for t in tables)], dtype=torch.int32)
        pages = torch.tensor([b for t in tables for b in t], dtype=torch.int32,
                             pin_memory=True).to(self.spec.device, non_blocking=True)
        last = torch.tensor([(n - 1) % self.spec.block_size + 1
                             for n in batch.context_lens[seqs]], dtype=torch.int32)
        return indptr, pages, last

    def build_metadata(self, batch: AttentionBatch) -> FlashInferMetadata:
        s = self.spec
        heads = (s.num_heads, s.num_kv_heads, s.head_dim)
        num_decodes = batch.num_decodes
        self._copied.synchronize()
        if num_decodes:
            indptr, pages, last = self._pages(batch, slice(0, num_decodes))
            self._decode.plan(indptr, pages, last, *heads, s.block_size, q_data_type=s.dtype,
                              sm_scale=s.scale)
        queries = batch.query_lens[num_decodes:]
        ragged = batch.prefills_from_start
        if queries:
            qo_indptr = torch.tensor([0, *accumulate(queries)], dtype=torch.int32)
            if ragged:
                self._ragged.plan(qo_indptr, qo_indptr, *heads, causal=True, sm_scale=s.scale,
                                  q_data_type=s.dtype)
            else:
                indptr, pages, last = self._pages(batch, slice(num_decodes, None))
                self._paged.plan(qo_indptr, indptr, pages, last, *heads, s.block_size,
                                 causal=True, sm_scale=s.scale, q_data_type=s.dtype)
        slot_mapping = torch.tensor(batch.slot_mapping, dtype=torch.int64,
                                    pin_memory=True).to(s.device, non_blocking=True)
        self._copied.record()
        self._builds += 1
        return FlashInferMetadata(len(batch.slot_mapping), num_decodes, slot_mapping, ragged,
                                  self._builds)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: FlashInferMetadata) -> torch.Tensor:
        """q [T, Hq, D], k, v [T, Hk, D] (strided views are fine) -> [T, Hq, D]."""
        check_metadata_current(metadata.build, self._builds,
                               "re-planned FlashInfer's kernels for another step")
        q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
        write_kv(k, v, kv_cache, metadata.slot_mapping)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        cache = (kv_cache[0], kv_cache[1])
        n = metadata.num_decodes
        if n:
            self._decode.run(q[:n], cache, out=out[:n])
        if metadata.num_tokens > n:
            if metadata.ragged_prefill:
                self._ragged.run(q[n:], k[n:], v[n:], out=out[n:])
            else:
                self._paged.run(q[n:], cache, out=out[n:])
        return out

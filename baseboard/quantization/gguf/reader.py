"""A GGUF file's header read in one pass: its metadata and its tensor table, with the
tensor data left in a memory map until a tensor is decoded.

gguf's GGUFReader builds a numpy view for every element of every metadata array, which for
a vocabulary of 49k tokens and as many merges takes seconds. The header is a run of
length-prefixed records (GGUF v2 and v3, little-endian); walking it with struct takes tens
of milliseconds. The GGML type table (names, block sizes) is the gguf package's.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ModelError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 counted with 32-bit integers; llama.cpp stopped writing it in 2023
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9  # the two metadata value types of variable size
# every other metadata value type -> its struct format
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
           12: "d"}


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table.

    shape      dimensions outermost first, as torch lists them (GGUF stores them innermost
               first): a [N, K] matrix has shape (N, K)
    type_name  the GGML type ("F32", "Q4_1", ...), or "type <id>" for an id gguf does not know
    offset     of the tensor's first byte in the file
    nbytes     its size in the file (0 for an unknown type)
    """

    name: str
    type_name: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class GgufFile:
    """The parsed header of a GGUF file and a read-only memory map of the whole file.

    metadata  key -> int, float, bool, str, or a list of them (arrays)
    tensors   the tensor table, in file order
    """

    def __init__(self, path: Path, metadata: dict[str, Any], tensors: list[TensorInfo],
                 buffer: mmap.mmap):
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self._buffer = buffer

    def data(self, info: TensorInfo) -> np.ndarray:
        """The stored bytes of a tensor: uint8 [nbytes], a view of the memory map."""
        return np.frombuffer(self._buffer, np.uint8, count=info.nbytes, offset=info.offset)


def read_gguf(path: Path) -> GgufFile:
    """Parse the header of ``path``. A file that is not GGUF, or is cut short, is a ModelError
    that names it."""
    try:
        import gguf  # noqa: F401  (the GGML type table)
    except ImportError:
        raise ModelError(f"reading {path.name} needs the gguf package, which is not installed. "
                         f"Install it with pip install 'baseboard[gguf]'.") from None
    try:
        with open(path, "rb") as f:
            buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        metadata, tensors = _Header(buffer).read()
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); "
                         f"it may be truncated or corrupt. Download it again.") from None
    for info in tensors:
        if info.offset + info.nbytes > len(buffer):
            raise ModelError(f"{path} is not a readable GGUF file: tensor {info.name!r} ends "
                             f"at byte {info.offset + info.nbytes}, past the end of the file "
                             f"({len(buffer)} bytes). The file is truncated; download it "
                             f"again.")
    return GgufFile(path, metadata, tensors, buffer)


class _Header:
    """A cursor over the header bytes."""

    def __init__(self, buffer: mmap.mmap):
        self.buffer = buffer
        self.pos = 0

    def read(self) -> tuple[dict[str, Any], list[TensorInfo]]:
        if self.buffer[:4] != MAGIC:
            raise ValueError(f"it starts with {bytes(self.buffer[:4])!r}, not {MAGIC!r}")
        self.pos = 4
        version, tensor_count, kv_count = self._unpack("<IQQ")
        if version not in VERSIONS:
            raise ValueError(f"GGUF version {version}; readable: {VERSIONS}")
        metadata = {}
        for _ in range(kv_count):
            key = self._string()
            metadata[key] = self._value(self._unpack("<I")[0])
        entries = []
        for _ in range(tensor_count):
            name = self._string()
            (dims,) = self._unpack("<I")
            shape = self._unpack(f"<{dims}Q")[::-1]
            type_id, offset = self._unpack("<IQ")
            entries.append((name, tuple(shape), type_id, offset))
        alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = -(-self.pos // alignment) * alignment
        return metadata, [_tensor_info(name, shape, type_id, data_start + offset)
                          for name, shape, type_id, offset in entries]

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (length,) = self._unpack("<Q")
        end = self.pos + length
        if end > len(self.buffer):
            raise ValueError(f"a string of {length} bytes at byte {self.pos} runs past the end")
        text = self.buffer[self.pos:end].decode("utf-8")
        self.pos = end
        return text

    def _value(self, value_type: int) -> Any:
        if value_type in SCALARS:
            return self._unpack("<" + SCALARS[value_type])[0]
        if value_type == STRING:
            return self._string()
        if value_type != ARRAY:
            raise ValueError(f"metadata value type {value_type} at byte {self.pos}")
        item_type, count = self._unpack("<IQ")
        if item_type in SCALARS:  # numbers in one block: token types, scores
            dtype = np.dtype("<" + SCALARS[item_type])
            values = np.frombuffer(self.buffer, dtype, count=count, offset=self.pos)
            self.pos += count * dtype.itemsize
            return values.tolist()
        return [self._value(item_type) for _ in range(count)]


def _tensor_info(name: str, shape: tuple[int, ...], type_id: int, offset: int) -> TensorInfo:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # imported once, by read_gguf

    try:
        kind = GGMLQuantizationType(type_id)
    except ValueError:
        return TensorInfo(name, f"type {type_id}", shape, offset, 0)
    block_size, block_bytes = GGML_QUANT_SIZES[kind]
    elements = int(np.prod(shape, dtype=np.int64))
    return TensorInfo(name, kind.name, shape, offset, elements // block_size * block_bytes)

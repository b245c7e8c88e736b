"""Every way a GGUF file can be unusable is a ModelError that names the problem: a damaged
file, a tensor or type we do not read, a bad metadata value, non-finite weights."""

from __future__ import annotations

import numpy as np
import pytest

from baseboard.core.errors import ModelError
from baseboard.models.loader import load_checkpoint
from tiny_models import tiny_hf_model, write_gguf

gguf = pytest.importorskip("gguf")  # optional: the gguf extra installs it


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return write_gguf(tiny_hf_model(), path, lambda name: "Q8_0")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_gguf(tiny_gguf, tmp_path, resolution, damage):
    path = tmp_path / "broken.gguf"
    if damage == "truncated":
        path.write_bytes(tiny_gguf.read_bytes()[:-5000])
    else:
        path.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match="broken.gguf is not a readable GGUF file"):
        load_checkpoint(path, resolution.catalog)


def test_unsupported_gguf_tensor_type_names_tensor_and_supported_types(tmp_path, resolution):
    iq4_nl = np.zeros((128, 2 * 18), np.uint8)  # [N, K/32 blocks of 18 bytes]
    path = write_gguf(tiny_hf_model(), tmp_path / "iq4.gguf", lambda name: "Q8_0",
                      raw_tensors={"blk.1.ffn_up.weight": (iq4_nl, "IQ4_NL")})
    with pytest.raises(ModelError) as err:
        load_checkpoint(path, resolution.catalog)
    message = str(err.value)
    assert "'blk.1.ffn_up.weight'" in message and "IQ4_NL" in message
    assert "F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q5_0" in message


def test_unknown_gguf_tensor_is_named(tmp_path, resolution):
    path = write_gguf(tiny_hf_model(), tmp_path / "extra.gguf", lambda name: "F32",
                      raw_tensors={"blk.0.attn_sinks.weight": (np.zeros(4, np.float32), "F32")})
    with pytest.raises(ModelError, match="'blk.0.attn_sinks.weight'"):
        load_checkpoint(path, resolution.catalog)


def test_unsupported_gguf_architecture(tmp_path, resolution):
    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match="GGUF architecture 'gpt2' is not supported; "
                                         "supported: llama, qwen2"):
        load_checkpoint(path, resolution.catalog)


@pytest.mark.parametrize("key, value", [("llama.attention.head_count", 0),
                                        ("llama.embedding_length", "wide")])
def test_invalid_metadata_value_names_the_gguf_key(tmp_path, resolution, key, value):
    path = write_gguf(tiny_hf_model(), tmp_path / "bad.gguf", lambda name: "F32",
                      metadata={key: value})
    with pytest.raises(ModelError) as err:
        load_checkpoint(path, resolution.catalog)
    message = str(err.value)
    assert "bad.gguf" in message and f"'{key}' is {value!r}" in message
    assert "positive integer" in message


@pytest.mark.parametrize("key", ["llama.feed_forward_length", "llama.block_count",
                                 "llama.attention.layer_norm_rms_epsilon",
                                 "llama.context_length"])
def test_missing_metadata_names_the_gguf_key(tmp_path, resolution, key):
    path = write_gguf(tiny_hf_model(), tmp_path / "short.gguf", lambda name: "F32",
                      metadata={key: None})
    with pytest.raises(ModelError, match=f"short.gguf lacks '{key}'"):
        load_checkpoint(path, resolution.catalog)


def q8_0_with_a_nan_scale(rows: int, cols: int) -> np.ndarray:
    data = gguf.quants.quantize(np.ones((rows, cols), np.float32), gguf.GGMLQuantizationType.Q8_0)
    data[1, 34:36] = np.array([np.nan], np.float16).view(np.uint8)  # row 1, second block's d
    return data


@pytest.mark.parametrize("gguf_name, hf_name, raw", [
    ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight",
     (q8_0_with_a_nan_scale(32, 64), "Q8_0")),
    ("output_norm.weight", "model.norm.weight",
     (np.array([1.0] * 63 + [np.inf], np.float32), "F32")),
])
def test_non_finite_weights_are_named(tmp_path, resolution, gguf_name, hf_name, raw):
    path = write_gguf(tiny_hf_model(), tmp_path / "nan.gguf", lambda name: "Q8_0",
                      raw_tensors={gguf_name: raw})
    checkpoint = load_checkpoint(path, resolution.catalog)
    with pytest.raises(ModelError, match=f"'{hf_name}' of .*nan.gguf holds 1 NaN or infinite"):
        list(checkpoint.weights())

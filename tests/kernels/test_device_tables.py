"""Per-device tile tables: the shipped table wins over the user's cache, tiles tuned here
are written to the cache (surviving a restart), and a new Triton version starts afresh."""

import json

import pytest

pytest.importorskip("triton")  # the Triton kernels' own module
from baseboard.kernels.triton import device_tables
from baseboard.kernels.triton.device_tables import DeviceTable


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "tables"
    folder.mkdir()
    monkeypatch.setattr(device_tables, "SHIPPED", folder)
    return folder


def test_a_tuned_tile_is_cached_and_read_back(shipped):
    table = DeviceTable("gpu_x")
    assert table.get("gemv", "64x32:bfloat16") is None
    table.remember("gemv", "64x32:bfloat16", [8, 512, 4, 3])
    assert DeviceTable("gpu_x").get("gemv", "64x32:bfloat16") == [8, 512, 4, 3]
    assert DeviceTable("gpu_y").get("gemv", "64x32:bfloat16") is None


def test_the_shipped_table_overrides_the_cache(shipped):
    DeviceTable("gpu_x").remember("gemv", "64x32:bfloat16", [8, 512, 4, 3])
    (shipped / "gpu_x.json").write_text(json.dumps({"gemv": {"64x32:bfloat16": [16, 256, 4, 2]}}))
    assert DeviceTable("gpu_x").get("gemv", "64x32:bfloat16") == [16, 256, 4, 2]


def test_a_new_triton_version_tunes_afresh(shipped, monkeypatch):
    DeviceTable("gpu_x").remember("decode", "D128", [32, 4, 2, 32, 4])
    monkeypatch.setattr(device_tables.triton, "__version__", "0.0.1")
    assert DeviceTable("gpu_x").get("decode", "D128") is None


def test_an_unreadable_cache_is_tuned_afresh(shipped):
    table = DeviceTable("gpu_x")
    table.cache_path.parent.mkdir(parents=True)
    table.cache_path.write_text("{not json")
    assert DeviceTable("gpu_x").get("gemv", "64x32:bfloat16") is None


def test_shipped_tables_are_well_formed():
    for path in device_tables.SHIPPED.glob("*.json"):
        data = json.loads(path.read_text())
        assert set(data) <= {"gemv", "decode", "prefill"}, path
        for shape, tile in data.get("gemv", {}).items():
            assert len(tile) == 4 and all(isinstance(v, int) for v in tile), (path, shape)

"""benchmarks/runtime_exports.py: the bytes it reports are the U-Net graph's weight files, not the graph's structure,
its manifest or the VAE decoder."""

from tests.test_bench_backends import _bench_module


def test_weight_bytes_count_the_unet_weight_files_only(monkeypatch, tmp_path):
    bench = _bench_module(monkeypatch, "runtime_exports")
    for name, n in (("unet-g0.bin", 700), ("unet-g0.xml", 50), ("runtime.json", 9), ("vae_decoder.bin", 400)):
        (tmp_path / name).write_bytes(b"x" * n)
    assert bench.weight_bytes(tmp_path) == 700
    (tmp_path / "unet-g1.onnx").write_bytes(b"x" * 30)
    assert bench.weight_bytes(tmp_path) == 730

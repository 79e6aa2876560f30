"""CPU feature detection and the saturation-free INT8 range choice."""
from __future__ import annotations

import pytest

from diffusia.quant import cpu

FLAGS_ZEN1 = "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2\nmodel name\t: AMD EPYC 7551\n"
FLAGS_VNNI = "flags\t\t: avx2 fma avx512f avx512bw avx512_vnni\nmodel name\t: Intel Xeon\n"
FLAGS_AMX = "flags\t\t: avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n"


@pytest.fixture
def fake_cpuinfo(monkeypatch):
    def use(text: str, machine: str = "x86_64") -> None:
        monkeypatch.setattr(cpu, "_read_cpuinfo", lambda: text)
        monkeypatch.setattr(cpu.platform, "machine", lambda: machine)
        monkeypatch.setattr(cpu.torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
        cpu.cpu_features.cache_clear()

    yield use
    cpu.cpu_features.cache_clear()


def test_features_keys_and_types():
    f = cpu.cpu_features()
    assert {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"} <= set(f)
    assert all(isinstance(v, bool) for v in f.values())


def test_no_vnni_means_7bit_weights_with_8bit_activations(fake_cpuinfo):
    fake_cpuinfo(FLAGS_ZEN1)
    f = cpu.cpu_features()
    assert f["avx2"] and f["fma"] and not (f["avx512f"] or f["avx512_vnni"] or f["avx_vnni"] or f["amx"])
    assert cpu.saturation_risk()
    assert cpu.weight_qmax(127) == 127 and cpu.weight_qmax(255) == 64
    assert cpu.cpu_model() == "AMD EPYC 7551"


@pytest.mark.parametrize("text", [FLAGS_VNNI, FLAGS_AMX, "flags\t\t: avx2 avx_vnni\n"])
def test_vnni_or_amx_means_8bit(fake_cpuinfo, text):
    fake_cpuinfo(text)
    assert cpu.has_vnni() and not cpu.saturation_risk()
    assert cpu.weight_qmax(255) == 127


def test_non_x86_has_no_pair_saturation(fake_cpuinfo):
    fake_cpuinfo("Features\t: fp asimd asimddp\n", machine="aarch64")
    assert not cpu.saturation_risk() and cpu.weight_qmax(255) == 127


def test_saturation_free_bounds():
    # every pair of u8 x s8 products must fit the int16 that vpmaddubsw saturates to
    for act_qmax in (127, 255):
        w = 127 if act_qmax == 127 else 64
        assert 2 * act_qmax * w <= cpu.INT16_MAX


def test_this_machine_matches_cpuinfo():
    """On the project's machine (Zen 1, no VNNI) 8-bit activations get 7-bit weights."""
    f = cpu.cpu_features()
    if cpu.is_x86() and not (f["avx512_vnni"] or f["avx_vnni"] or f["amx"]):
        assert cpu.weight_qmax(255) == 64
    else:
        assert cpu.weight_qmax(255) == 127

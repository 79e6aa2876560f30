"""CPU feature detection, the override (environment variable and context manager), classes and targets."""

from __future__ import annotations

import pytest

from diffusia.errors import DiffusiaError
from diffusia.quant import cpu

FLAGS_ZEN1 = "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2\nmodel name\t: AMD EPYC 7551\n"
FLAGS_VNNI = "flags\t\t: avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16\nmodel name\t: Intel Xeon\n"
FLAGS_AMX = "flags\t\t: avx2 avx512f avx512_vnni amx_tile amx_int8 amx_bf16\n"


@pytest.fixture
def fake_cpuinfo(monkeypatch):
    monkeypatch.delenv(cpu.ENV_VAR, raising=False)

    def use(text: str, machine: str = "x86_64") -> None:
        monkeypatch.setattr(cpu, "_read_cpuinfo", lambda: text)
        monkeypatch.setattr(cpu.platform, "machine", lambda: machine)
        import torch

        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
        cpu.detected_features.cache_clear()

    yield use
    cpu.detected_features.cache_clear()


def test_features_keys_and_types():
    f = cpu.cpu_features()
    assert set(cpu.FEATURES) <= set(f) and "x86" in f
    assert all(isinstance(v, bool) for v in f.values())


def test_no_vnni_is_the_avx2_class(fake_cpuinfo):
    fake_cpuinfo(FLAGS_ZEN1)
    f = cpu.cpu_features()
    assert f["avx2"] and f["fma"] and not (f["avx512f"] or f["avx512_vnni"] or f["avx_vnni"] or f["amx"])
    assert cpu.host_class() == "avx2" and cpu.resolve_target("auto") == "avx2"
    assert cpu.saturates(255, 127) and not cpu.saturates(255, 64) and not cpu.saturates(127, 127)
    assert cpu.cpu_model() == "AMD EPYC 7551"
    assert not cpu.has_native_half("bf16")


@pytest.mark.parametrize("text", [FLAGS_VNNI, FLAGS_AMX, "flags\t\t: avx2 avx_vnni\n"])
def test_vnni_or_amx_is_the_vnni_class(fake_cpuinfo, text):
    fake_cpuinfo(text)
    assert cpu.has_vnni() and cpu.host_class() == "vnni" and not cpu.saturates(255, 127)


def test_half_units(fake_cpuinfo):
    fake_cpuinfo(FLAGS_VNNI)
    assert cpu.has_native_half("fp16") and cpu.has_native_half("bf16")


def test_non_x86_has_no_pair_saturation(fake_cpuinfo):
    fake_cpuinfo("Features\t: fp asimd asimddp\n", machine="aarch64")
    assert not cpu.saturates(255, 127) and cpu.host_class() == "vnni"


def test_weight_range_per_class():
    # every pair of u8 x s8 products must fit the int16 that vpmaddubsw saturates to
    assert cpu.weight_qmax(255, "avx2") == 64 and cpu.weight_qmax(127, "avx2") == 127
    assert cpu.weight_qmax(255, "vnni") == 127
    for act_qmax in (127, 255):
        assert cpu.pair_sums_fit(act_qmax, cpu.weight_qmax(act_qmax, "avx2"))
    assert not cpu.pair_sums_fit(255, 65)


@pytest.mark.parametrize("host", [FLAGS_ZEN1, FLAGS_VNNI])
@pytest.mark.parametrize("cls", cpu.CPU_CLASSES)
def test_simulate_overrides_detection_on_either_host(fake_cpuinfo, host, cls):
    fake_cpuinfo(host)
    real = cpu.host_class()
    with cpu.simulate(cls) as feats:
        assert cpu.host_class() == cls and cpu.resolve_target("auto") == cls
        assert feats == cpu.cpu_features()
        with cpu.simulate("avx2,fma"):  # nests
            assert cpu.host_class() == "avx2"
        assert cpu.host_class() == cls
        assert cpu.host_class(cpu.detected_features()) == real  # the kernels' safety check sees the hardware
    assert cpu.host_class() == real


def test_environment_variable_overrides_detection(fake_cpuinfo, monkeypatch):
    fake_cpuinfo(FLAGS_ZEN1)
    monkeypatch.setenv(cpu.ENV_VAR, "vnni")
    assert cpu.host_class() == "vnni"
    monkeypatch.setenv(cpu.ENV_VAR, "avx2,fma,avx_vnni")
    assert cpu.cpu_features()["avx_vnni"] and cpu.host_class() == "vnni"
    with cpu.simulate("avx2"):  # the context manager wins over the environment
        assert cpu.host_class() == "avx2"
    monkeypatch.setenv(cpu.ENV_VAR, "avx9000")
    with pytest.raises(DiffusiaError, match="unknown CPU features.*avx9000"):
        cpu.cpu_features()


def test_targets_resolve_to_classes():
    with cpu.simulate("vnni"):
        assert [cpu.resolve_target(t) for t in cpu.TARGETS] == ["vnni", "avx2", "avx2", "vnni"]
    with pytest.raises(DiffusiaError, match="unknown target 'arm'"):
        cpu.resolve_target("arm")


def test_host_description_names_real_and_simulated_class(monkeypatch):
    monkeypatch.delenv(cpu.ENV_VAR, raising=False)
    real = cpu.host_class(cpu.detected_features())
    other = "avx2" if real == "vnni" else "vnni"
    d = cpu.host_description()
    assert d["class"] == real and d["simulated_class"] is None and d["model"]
    with cpu.simulate(other):
        d = cpu.host_description()
    assert d["class"] == real and d["simulated_class"] == other

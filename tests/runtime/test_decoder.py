"""The VAE decoder on OpenVINO: exported from the pipeline's own VAE and checked, then decoding any latent shape as
PyTorch does, in place of `vae.decode`."""

import json

import pytest
import torch

from diffusia.errors import DiffusiaError
from diffusia.runtime.artifact import FORMAT, MANIFEST, VERSION, read_manifest
from diffusia.runtime.decoder import DECODER, OpenVINODecoder, export_decoder

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exported(micro_pipeline_dir, tmp_path_factory):
    from diffusia import load_pipeline

    vae = load_pipeline(micro_pipeline_dir, progress=False).vae
    folder = tmp_path_factory.mktemp("decoder")
    return vae, folder, export_decoder(vae, folder)


def test_decoder_decodes_as_pytorch_at_any_shape(exported):
    vae, folder, info = exported
    assert info["file"] == DECODER and info["relative_l2"] < 1e-4 and (folder / "vae_decoder.bin").is_file()
    decoder = OpenVINODecoder(folder / DECODER)
    for shape in ((1, 4, 8, 8), (2, 4, 12, 16)):  # another size and a batch: one compiled model each
        z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = vae.decode(z).sample
        got = decoder(z)
        assert got.shape == expected.shape
        assert float((got - expected).norm() / expected.norm()) < 1e-4
    assert len(decoder._requests) == 2


def test_installed_decoder_is_what_the_pipeline_calls(exported, micro_pipeline_dir):
    from diffusia import load_pipeline

    _, folder, _ = exported
    vae = load_pipeline(micro_pipeline_dir, progress=False).vae  # a fresh VAE: installing changes it
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    other = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = vae.decode(z, return_dict=False)[0]
        vae.enable_tiling()  # --vae-tiling: PyTorch's tiled decode (tiles blended), which saves memory
        tiled = vae.decode(other).sample
        vae.disable_tiling()
        plain = vae.decode(other).sample
    decoder = OpenVINODecoder(folder / DECODER)
    decoder.install(vae)
    assert vae.diffusia_decoder == "openvino"
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, expected, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(vae.decode(z, return_dict=False)[0], expected, rtol=1e-3, atol=1e-4)
        vae.enable_tiling()  # asked for: PyTorch decodes, tiled as before
        torch.testing.assert_close(vae.decode(other).sample, tiled)
        assert (1, 4, 12, 12) not in decoder._requests
        vae.disable_tiling()
        torch.testing.assert_close(vae.decode(other).sample, plain, rtol=1e-3, atol=1e-4)
        assert (1, 4, 12, 12) in decoder._requests


def test_manifest_naming_a_missing_decoder_is_refused(tmp_path):
    (tmp_path / "unet-g0.xml").write_text("<net/>")
    manifest = {"format": FORMAT, "version": VERSION, "files": ["unet-g0.xml"], "vae_decoder": {"file": DECODER}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DiffusiaError, match="lacks its graph vae_decoder.xml"):
        read_manifest(tmp_path)

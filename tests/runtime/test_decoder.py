"""The VAE decoder on OpenVINO: exported from the pipeline's own VAE and checked, then decoding any latent shape as
PyTorch's decoder does, in place of `vae.decoder` for plain, sliced and tiled decodes."""

import json
import logging

import pytest
import torch

from diffusia.errors import DiffusiaError
from diffusia.runtime.artifact import FORMAT, MANIFEST, VERSION, read_manifest
from diffusia.runtime.decoder import DECODER, GRAPH, OpenVINODecoder, export_decoder, load_decoder

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exported(micro_pipeline_dir, tmp_path_factory):
    from diffusia import load_pipeline

    vae = load_pipeline(micro_pipeline_dir, progress=False).vae
    folder = tmp_path_factory.mktemp("decoder")
    return vae, folder, export_decoder(vae, folder)


def _rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape
    return float((got - expected).norm() / expected.norm())


def test_decoder_decodes_as_pytorch_at_any_shape(exported):
    vae, folder, info = exported
    assert info["file"] == DECODER and info["graph"] == GRAPH and info["relative_l2"] < 1e-4
    assert (folder / "vae_decoder.bin").is_file()
    decoder = OpenVINODecoder(folder / DECODER)
    for shape in ((1, 4, 8, 8), (2, 4, 12, 16)):  # another size and a batch: one compiled model each
        z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert _rel(decoder(z), vae.decoder(z)) < 1e-4
    assert len(decoder._requests) == 2
    with pytest.raises(DiffusiaError, match="takes no latent embeddings"):
        decoder(z, latent_embeds=z)


def test_installed_decoder_serves_plain_sliced_and_tiled_decodes(exported, micro_pipeline_dir):
    from diffusia import load_pipeline

    _, folder, _ = exported
    vae = load_pipeline(micro_pipeline_dir, progress=False).vae  # a fresh VAE: installing changes it
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_latent_min_size, vae.tile_sample_min_size = 4, 4 * factor  # 12x12 latents decode in 16 tiles
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    big = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(3))

    def decodes():
        with torch.no_grad():
            plain = vae.decode(z, return_dict=False)[0]
            vae.enable_slicing()
            sliced = vae.decode(z).sample
            vae.disable_slicing()
            vae.enable_tiling()
            tiled = vae.decode(big).sample
            vae.disable_tiling()
        return plain, sliced, tiled

    expected = decodes()
    decoder = OpenVINODecoder(folder / DECODER)
    decoder.install(vae)
    assert vae.diffusia_decoder == "openvino" and vae.decoder is decoder
    assert not [n for n, _ in vae.named_parameters() if n.startswith("decoder.")]  # PyTorch's weights are gone
    with pytest.raises(DiffusiaError, match="no PyTorch weights to save"):  # no VAE saved without its decoder
        vae.state_dict()  # what save_pretrained writes
    for got, want in zip(decodes(), expected):
        assert _rel(got, want) < 1e-4
    assert {(2, 4, 8, 8), (1, 4, 8, 8), (1, 4, 4, 4), (1, 4, 3, 3)} <= set(decoder._requests)  # batch, slice, tiles


def test_decoder_of_the_earlier_layout_is_left_to_pytorch(exported, caplog):
    _, folder, info = exported
    assert isinstance(load_decoder(folder, info, "f32", None), OpenVINODecoder)
    assert load_decoder(folder, None, "f32", None) is None
    with caplog.at_level(logging.WARNING, logger="diffusia.runtime.decoder"):
        assert load_decoder(folder, {"file": DECODER, "relative_l2": 0.0}, "f32", None) is None  # no "graph" key
    assert "predates diffusia's decoder layout" in caplog.text


def test_manifest_naming_a_missing_decoder_is_refused(tmp_path):
    (tmp_path / "unet-g0.xml").write_text("<net/>")
    manifest = {"format": FORMAT, "version": VERSION, "files": ["unet-g0.xml"], "vae_decoder": {"file": DECODER}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DiffusiaError, match="lacks its graph vae_decoder.xml"):
        read_manifest(tmp_path)

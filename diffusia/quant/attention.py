"""INT8 attention (`Recipe.attention = "int8"`): a diffusers attention processor whose two matmuls take integer
inputs, as NNCF's TRANSFORMER model runs them on OpenVINO. Q, K and V (the outputs of to_q / to_k / to_v) are
quantized to symmetric int8 and the attention probabilities (the softmax output) to u8, each with its own range
per timestep group, calibrated over the sampler's trajectories like the layers' (MSE: a softmax over 1024 keys
stays far below 1, and its peaks are what matter).

The quantizers are fake-quant ops (`torch.fake_quantize_per_tensor_affine`), so the ONNX export carries them as
QDQ pairs that OpenVINO fuses into u8/s8 matmuls. In PyTorch the attention then computes the same integer math in
float (exact codes, float accumulation): it is the reference, not a faster path (see the README)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusia.calib.base import Calibrator, GroupCalibration, get_calibrator
from diffusia.errors import DiffusiaError
from diffusia.quant import qmath
from diffusia.quant.precisions import act_digits
from diffusia.quant.timestep import TimestepState

QMAX = 255  # u8 codes; symmetric ranges put the zero point at 128, which a runtime runs as int8
# attention scores held at once (256 MB of float32): PyTorch's int8 attention computes in chunks of this many, and
# ONNX Runtime's graphs slice an attention with more per head (`export/head_slices.py`)
SCORES_AT_ONCE = 1 << 26
PROJECTIONS = ("to_q", "to_k", "to_v")


class ActQuantizer(GroupCalibration, nn.Module):
    """A per-tensor activation quantizer with one range per timestep group (modes as the quantized layers':
    float passes through, calibrate observes, fake and real quantize-dequantize)."""

    def __init__(self, symmetric: bool, groups: int = 1, ts: TimestepState | None = None) -> None:
        super().__init__()
        self.symmetric, self._ts, self.mode = symmetric, ts, "float"
        self._calibrators: list[Calibrator] = [self.new_calibrator() for _ in range(groups)]
        self.register_buffer("act_range", torch.zeros(groups, 2))
        self.register_buffer("act_scale", torch.zeros(groups))
        self.register_buffer("act_zero_point", torch.zeros(groups, dtype=torch.int32))

    def new_calibrator(self) -> Calibrator:
        return get_calibrator("mse", qmax=QMAX, symmetric=self.symmetric)

    @property
    def group(self) -> int:
        return 0 if self._ts is None else min(self._ts.group, len(self.act_scale) - 1)

    @property
    def calibrated(self) -> bool:
        return bool((self.act_scale > 0).all())

    act_qmax = QMAX

    def act_qparams(self, group: int) -> tuple[float, int]:
        return float(self.act_scale[group]), int(self.act_zero_point[group])

    def set_mode(self, mode: str) -> None:
        if mode in ("fake", "real") and not self.calibrated:
            raise DiffusiaError("an attention quantizer has no range: calibrate before fake quantization or freeze")
        self.mode = mode
        if mode == "real":
            self._calibrators = [self.new_calibrator() for _ in self._calibrators]  # drop what they collected

    def compute_ranges(self) -> bool:
        """Per-group (scale, zero point) from what the calibrators observed; False if they observed nothing."""
        seen = {g: c.compute() for g, c in enumerate(self._calibrators) if not c.empty}
        if not seen:
            return False
        union = (min(r[0] for r in seen.values()), max(r[1] for r in seen.values()))
        for g in range(len(self._calibrators)):
            lo, hi = seen.get(g, union)  # a group no calibration timestep fell in: the union
            self.act_range[g] = torch.tensor([lo, hi])
            self.act_scale[g], self.act_zero_point[g] = qmath.act_qparams(lo, hi, QMAX, self.symmetric)
        return True

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "float":
            return x
        if self.mode == "calibrate":
            self._calibrators[self.group].collect(x)
            return x
        scale, zp = self.act_qparams(self.group)
        return torch.fake_quantize_per_tensor_affine(x.float(), scale, zp, 0, QMAX).to(x.dtype)


class QAttnProcessor(nn.Module):
    """diffusers' `AttnProcessor2_0` with int8 Q/K/V and u8 attention probabilities (its own SDPA in float mode)."""

    def __init__(self, groups: int = 1, ts: TimestepState | None = None) -> None:
        super().__init__()
        self.q, self.k, self.v = (ActQuantizer(True, groups, ts) for _ in range(3))
        self.probs = ActQuantizer(False, groups, ts)

    def quantizers(self) -> dict[str, ActQuantizer]:
        return {"q": self.q, "k": self.k, "v": self.v, "probs": self.probs}

    def forward(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *_, **__):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            encoder_hidden_states if encoder_hidden_states is not None else hidden_states
        ).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = self.q(attn.to_q(hidden_states))
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = self.k(attn.to_k(encoder_hidden_states)), self.v(attn.to_v(encoder_hidden_states))
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None or attn.norm_k is not None:
            raise DiffusiaError("int8 attention quantizes Q and K before a QK norm: keep this model's attention float")
        if self.probs.mode == "float":
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        else:
            hidden_states = self._attend(query, key, value, attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """softmax(Q K^T / sqrt(d) + mask), quantized, times V: traced for export whole on [batch, heads, tokens,
        dim], the pattern OpenVINO fuses into one attention kernel with its transposes (a 3-D trace left int8
        transposes, reshapes and slices beside it, at the same step time: benchmarks/results/vnni/attention_4d/); in
        PyTorch over chunks of batch x heads."""
        if torch.jit.is_tracing():
            return self._probs_times_v(q, k, v, mask)
        return self._in_chunks(q, k, v, mask, max(1, SCORES_AT_ONCE // (q.shape[2] * k.shape[2])))

    def _in_chunks(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, step: int) -> Tensor:
        """`_probs_times_v` over chunks of `step` of the batch x heads [tokens, dim] matrices."""
        b, h, n, d = q.shape
        q, k, v = (t.reshape(b * h, -1, d) for t in (q, k, v))
        if mask is not None:
            mask = mask.expand(b, h, n, k.shape[1]).reshape(b * h, n, -1)
        out = [
            self._probs_times_v(
                q[i : i + step], k[i : i + step], v[i : i + step], None if mask is None else mask[i : i + step]
            )
            for i in range(0, b * h, step)
        ]
        return (out[0] if len(out) == 1 else torch.cat(out)).reshape(b, h, n, d)

    def _probs_times_v(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores + mask
        return self.probs(scores.softmax(-1)) @ v


def attentions(unet: nn.Module) -> dict[str, nn.Module]:
    """diffusers' attention modules of `unet` by name (duck-typed: projections and a processor)."""
    return {
        n: m for n, m in unet.named_modules() if all(hasattr(m, p) for p in PROJECTIONS) and hasattr(m, "set_processor")
    }


def eligible(unet: nn.Module, layer_plan: dict[str, str] | None = None) -> list[str]:
    """The attentions whose Q/K/V projections are W8A8-family layers (static activations): in the quantized
    `unet`, or, given the `layer_plan` of a float one, in that plan."""

    def w8a8(name: str) -> bool:
        if layer_plan is not None:
            return act_digits(layer_plan.get(name, "keep")) > 0
        return bool(getattr(getattr(unet.get_submodule(name), "spec", None), "act_digits", 0))

    return [n for n in attentions(unet) if all(w8a8(f"{n}.{p}") for p in PROJECTIONS)]


def install(unet: nn.Module, names: list[str], groups: int = 1, ts: TimestepState | None = None) -> None:
    """Give the named attentions an int8 attention processor (uncalibrated, in float mode)."""
    for name in names:
        unet.get_submodule(name).set_processor(QAttnProcessor(groups, ts))


def processors(unet: nn.Module) -> dict[str, QAttnProcessor]:
    """The int8 attention processors by attention name."""
    return {n: m.processor for n, m in attentions(unet).items() if isinstance(m.processor, QAttnProcessor)}


def quantizers(unet: nn.Module) -> dict[str, ActQuantizer]:
    """Every attention quantizer by module name (`<attention>.processor.<q|k|v|probs>`)."""
    return {f"{n}.processor.{k}": q for n, p in processors(unet).items() for k, q in p.quantizers().items()}


def uninstall(unet: nn.Module) -> None:
    """Give the int8 attentions diffusers' default processor back."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for name in processors(unet):
        unet.get_submodule(name).set_processor(AttnProcessor2_0())

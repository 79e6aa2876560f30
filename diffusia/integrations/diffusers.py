"""diffusia as a diffusers quantization method: a quantized U-Net folder carries `quantization_config`
(`quant_method: "diffusia"`) in its `config.json`, and `DiffusionPipeline.from_pretrained` /
`UNet2DConditionModel.from_pretrained` rebuild it through `DiffusiaQuantizer` (the `DiffusersQuantizer` contract of
`diffusers/quantizers/base.py`). diffusers has no public registry: `register()` adds the method to the two tables of
`diffusers.quantizers.auto` and fails with one line if a diffusers release renames them."""

from __future__ import annotations

import enum
import json
from typing import Any

from diffusers.quantizers.base import DiffusersQuantizer
from diffusers.quantizers.quantization_config import QuantizationConfigMixin

from diffusia.errors import DiffusiaError
from diffusia.quant import api

QUANT_METHOD = "diffusia"


class DiffusiaMethod(str, enum.Enum):
    """diffusers reads `quant_method.value`; its own enum cannot be extended."""

    DIFFUSIA = QUANT_METHOD


class DiffusiaQuantizationConfig(QuantizationConfigMixin):
    """What a quantized U-Net's `config.json` says: the recipe, the INT8 layout's target and the quantization map
    (every quantized layer's precision and settings). `modules_to_not_convert`: the quantizable layers the recipe
    left in float."""

    def __init__(
        self,
        quantization_map: dict[str, Any],
        recipe: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        modules_to_not_convert: list[str] | None = None,
        quant_method: str = QUANT_METHOD,
        **kwargs: Any,
    ) -> None:
        if quant_method != QUANT_METHOD:
            raise DiffusiaError(f"quant_method {quant_method!r} is not diffusia's")
        self.quant_method = DiffusiaMethod.DIFFUSIA
        self.quantization_map = quantization_map
        self.recipe = recipe
        self.target = target
        self.modules_to_not_convert = list(modules_to_not_convert or [])

    @classmethod
    def from_model(cls, unet) -> DiffusiaQuantizationConfig:
        from diffusia.quant.policy import layer_names

        qmap = api.quantization_map(unet)
        kept = [n for n in layer_names(unet) if n not in qmap["layers"]]
        return cls(qmap, recipe=qmap.get("recipe"), target=qmap.get("target"), modules_to_not_convert=kept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "quant_method": QUANT_METHOD,
            "recipe": self.recipe,
            "target": self.target,
            "modules_to_not_convert": self.modules_to_not_convert,
            "quantization_map": self.quantization_map,
        }

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def __repr__(self) -> str:  # diffusers logs configs; the map has one entry per layer
        name = (self.recipe or {}).get("name")
        return f"{type(self).__name__}(recipe={name!r}, layers={len(self.quantization_map.get('layers', {}))})"


class DiffusiaQuantizer(DiffusersQuantizer):
    """Loads diffusia's frozen (real-kernel) U-Nets. Quantizing happens in diffusia (`diffusia.quantize`), which
    calibrates over the sampler's trajectories; diffusers only loads the result."""

    requires_calibration = True
    required_packages = None

    def __init__(self, quantization_config: DiffusiaQuantizationConfig, **kwargs: Any) -> None:
        super().__init__(quantization_config, **kwargs)
        self._skeleton = None

    def update_torch_dtype(self, torch_dtype):
        return None  # every tensor keeps the dtype it was saved in (int8 codes, fp32 scales, kept layers)

    def _process_model_before_weight_loading(self, model, **kwargs: Any):
        self._skeleton = api.rebuild_skeleton(model, self.quantization_config.quantization_map)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs: Any):
        api.finish_loading(model, self.quantization_config.quantization_map, self._skeleton)
        self._skeleton = None
        return model

    def _dequantize(self, model):
        return api.dequantize(model)

    @property
    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def register() -> None:
    """Make `quant_method: "diffusia"` known to diffusers (idempotent)."""
    import diffusers
    from diffusers.quantizers import auto

    tables = [getattr(auto, name, None) for name in ("AUTO_QUANTIZER_MAPPING", "AUTO_QUANTIZATION_CONFIG_MAPPING")]
    if not all(isinstance(t, dict) for t in tables):
        raise DiffusiaError(
            f"diffusers {diffusers.__version__} no longer has the quantizer tables diffusia registers "
            "in (diffusers.quantizers.auto.AUTO_QUANTIZER_MAPPING): install the diffusers version in "
            "diffusia's requirements.txt"
        )
    tables[0][QUANT_METHOD] = DiffusiaQuantizer
    tables[1][QUANT_METHOD] = DiffusiaQuantizationConfig

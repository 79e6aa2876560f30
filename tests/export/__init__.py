from diffusia.export import qdq_layers
from diffusia.quant import api


def weight_parts(unet) -> dict[int, int]:
    """How many weights the export writes per quantized layer (by `id`): a GEGLU projection two halves, others one."""
    qmods = api.qmodules(unet)
    split = {id(g.proj) for g in qdq_layers.split_geglus(unet, qmods)}
    return {id(m): 2 if id(m) in split else 1 for m in qmods.values()}

"""Image-quality metrics of the evaluation harness: SSIM, PSNR, LPIPS and Frechet distances."""

from diffusia.eval.metrics.features import get_feature_extractor
from diffusia.eval.metrics.frechet import frechet_distance
from diffusia.eval.metrics.lpips import lpips_distance
from diffusia.eval.metrics.psnr import psnr
from diffusia.eval.metrics.ssim import ssim

__all__ = ["ssim", "psnr", "lpips_distance", "frechet_distance", "get_feature_extractor"]

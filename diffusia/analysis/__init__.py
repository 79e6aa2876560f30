"""Analyses over quantization experiments.

- `sensitivity`: per-layer sensitivity (SIMULATED fake quant): `run_sensitivity(pipe, recipe, prompts) -> dict`.
- `search`: per-layer precisions under size / quality / latency targets: `search_recipe(sens, budget_mb) -> Recipe`.
- `results`: `VariantResult` and loaders for the evaluation harness' results.json.
- `pareto`: `pareto_front(points, objectives)` and plots / tables across evaluation runs.
- `recommend`: `recommend(results, memory_mb, latency_s) -> Recommendation`, `device_report(results) -> str`.

Submodules are imported on use (the sensitivity module pulls in torch and diffusers).
"""

"""Analysis of runs: load a checkpoint anywhere, then ask at which scales it recognises
which features, how stable it is under small shifts, and how healthy its activations were.

    from progressive import analysis
    run = analysis.load_run(workdir)
    analysis.size_matrix({"latest": run}, images, labels, sizes=[16, 32, 64])

Modules: `run` (loading), `scale` (size matrix, object scale, receptive field),
`controls` (batch-norm recalibration, canvas without resampling, grid alignment), `shift`
(jaggedness, consistency), `activations` (fastai's ActivationStats as training recorded
them, and of restored checkpoints), `ensemble` (multi-size),
`interpret` (fastai's ClassificationInterpretation: per class, confusion, top losses;
show_batch; loss curves), `plots` (figures), `report` (everything into `DIR/analysis/`).
See docs/ANALYSIS.md.

Names are imported lazily: `from progressive import analysis` loads a module (and pandas
or matplotlib with `report` and `plots`) only when one of its names is first used.
"""

import importlib

_EXPORTS = {
    "activation_stats": "activations",
    "checkpoint_stats": "activations",
    "layer_names": "activations",
    "read_stats": "activations",
    "stats_rows": "activations",
    "bn_size_matrix": "controls",
    "recalibrated_logits": "controls",
    "canvas": "controls",
    "canvas_matrix": "controls",
    "ensemble_from_logits": "ensemble",
    "chance_warning": "interpret",
    "interpret_run": "interpret",
    "interpretation": "interpret",
    "show_batch": "interpret",
    "training_curves": "interpret",
    "size_ensemble": "ensemble",
    "Options": "report",
    "analyze": "report",
    "figures": "report",
    "sections_left_out": "report",
    "write_report": "report",
    "Run": "run",
    "RunError": "run",
    "check_comparable": "run",
    "check_model_fits": "run",
    "checkpoint_steps": "run",
    "dataset_name": "run",
    "describe": "run",
    "load_examples": "run",
    "load_run": "run",
    "shift_mode": "run",
    "stage_end_runs": "run",
    "object_scale_accuracy": "scale",
    "receptive_field": "scale",
    "rf_coverage": "scale",
    "size_matrix": "scale",
    "size_matrix_from_logits": "scale",
    "consistency": "shift",
    "jaggedness": "shift",
    "shift_consistency": "shift",
    "shift_sweep": "shift",
    "topk_correct": "shift",
    "translate": "shift",
}
SUBMODULES = ("activations", "controls", "ensemble", "interpret", "invariance", "plots", "report",
              "run", "scale", "shift")

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"progressive.analysis.{_EXPORTS[name]}"), name)
  if name in SUBMODULES:
    return importlib.import_module(f"progressive.analysis.{name}")
  raise AttributeError(f"module 'progressive.analysis' has no attribute {name!r}")


def __dir__():
  return sorted([*_EXPORTS, *SUBMODULES])

"""
The paper's Table 1 as a tool: train and evaluate one config under many settings of its keys,
several seeds each, and tabulate / plot COCO AP (``tools/ablate.py``).
"""
from .command_line import main
from .recipes import RECIPES, V2_ADAMW_RECIPE, V2_RECIPE, recipe_verdict, scaled_schedule
from .report import plot_results, results_markdown, summarize, write_results
from .runner import METRICS, RESULT_FILE, run_one, run_sweep
from .settings import AblationError, Setting, build_settings, parse_grid, parse_variant, prepare

__all__ = [
    "AblationError",
    "Setting",
    "parse_grid",
    "parse_variant",
    "build_settings",
    "prepare",
    "run_one",
    "run_sweep",
    "summarize",
    "results_markdown",
    "plot_results",
    "write_results",
    "main",
    "RECIPES",
    "V2_ADAMW_RECIPE",
    "V2_RECIPE",
    "recipe_verdict",
    "scaled_schedule",
    "METRICS",
    "RESULT_FILE",
]

"""Charts like the blog's, drawn from plain data so predictions and measurements plot alike."""

from mmesim.report.frameworks import plot_frameworks
from mmesim.report.memory import plot_memory, plot_run_memory
from mmesim.report.overlay import plot_overlay
from mmesim.report.steps import plot_steps

__all__ = ["plot_steps", "plot_frameworks", "plot_memory", "plot_run_memory", "plot_overlay"]

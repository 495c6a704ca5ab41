"""`rewardpatch plot`: CSVs and plots of the scalars an mmengine (MMSeg 1.x) or mmcv (0.x) run logged.

logs.py reads the logs (their formats: its docstring), maths.py smooths and fits, figures.py
draws (matplotlib, imported only then), ab.py compares several runs (`plot RUN_A RUN_B ...`),
command.py is the command and one run's outputs.
"""

from .ab import ab_figure, load_joined_run
from .command import plot_command
from .figures import miou_figure
from .logs import ScalarLog, find_scalars, metric_columns, read_scalar_log
from .maths import linear_trend, tensorboard_smoothing

__all__ = [
    "ScalarLog", "ab_figure", "find_scalars", "linear_trend", "load_joined_run", "metric_columns",
    "miou_figure", "plot_command", "read_scalar_log", "tensorboard_smoothing",
]

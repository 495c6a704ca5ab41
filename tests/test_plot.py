"""`rewardpatch plot`: CSVs and PNGs from an mmengine run's scalars.json, and its one-line errors."""

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from conftest import one_line_error, run_cli
from rewardpatch.plot import (
    ScalarLog,
    find_scalars,
    linear_trend,
    metric_columns,
    miou_figure,
    read_scalar_log,
    tensorboard_smoothing,
)


def training_line(step, reward=True):
    line = {"lr": 0.01, "data_time": 0.01, "loss": 1.0 / step, "decode.loss_ce": 0.5 / step, "decode.acc_seg": 80.0}
    if reward:
        line.update({"decode.loss_ce_reward": -0.01, "decode.reward_mean": 0.5, "decode.reward_greedy": 0.55,
                     "decode.adv_std": 0.05})
    return {**line, "time": 0.3, "iter": step, "memory": 1024, "step": step}


def validation_line(step, miou):
    return {"aAcc": 90.0, "mIoU": miou, "mAcc": miou + 5, "data_time": 0.01, "time": 0.1, "step": step}


def write_scalars(path, lines):
    """Write JSON Lines the way mmengine's LocalVisBackend does; strings are written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def mmengine_run(work_dir, timestamp, lines):
    return write_scalars(work_dir / timestamp / "vis_data" / "scalars.json", lines)


def make_work_dir(root):
    """A work_dir with an older run and a newer one: 4 training lines, 2 validations, 1 malformed line."""
    mmengine_run(root, "20240101_090000", [training_line(10), validation_line(10, 11.0)])
    mmengine_run(root, "20240102_090000", [
        training_line(50), training_line(100),
        validation_line(100, 60.0),
        '{"lr": 0.01, "loss": 0.3',
        training_line(150, reward=False), training_line(200),
        validation_line(200, 62.5),
    ])
    return root


@pytest.fixture
def work_dir(tmp_path):
    return make_work_dir(tmp_path / "work_dirs" / "reward_deeplab")


@dataclass
class Plotted:
    code: int
    out: str
    err: str
    out_dir: Path


@pytest.fixture(scope="module")
def plotted(tmp_path_factory) -> Plotted:
    """One full `plot` of the work_dir against a CE baseline; rendering is the slow part, so it is shared."""
    root = tmp_path_factory.mktemp("plot")
    work = make_work_dir(root / "work_dirs" / "reward_deeplab")
    mmengine_run(root / "ce", "20231201_090000", [training_line(100, reward=False), validation_line(200, 58.0)])
    code, out, err = run_cli(None, "plot", work, "--baseline", root / "ce", "-o", root / "plots")
    return Plotted(code, out, err, root / "plots")


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def plot(capsys, tmp_path, *args):
    out_dir = tmp_path / "plots"
    code, out, err = run_cli(capsys, "plot", *args, "-o", out_dir)
    return code, out, err, out_dir


def test_loss_csv_has_step_and_a_column_per_loss_and_reward_statistic(plotted):
    assert plotted.code == 0
    rows = read_csv(plotted.out_dir / "loss.csv")
    assert rows[0] == ["step", "loss", "decode.loss_ce", "decode.loss_ce_reward", "decode.reward_mean",
                       "decode.reward_greedy", "decode.adv_std"]
    assert [row[0] for row in rows[1:]] == ["50", "100", "150", "200"]
    assert float(rows[1][1]) == pytest.approx(1 / 50)


def test_loss_csv_leaves_a_cell_empty_where_a_line_lacks_the_key(plotted):
    step_150 = read_csv(plotted.out_dir / "loss.csv")[3]
    assert step_150[0] == "150" and step_150[3:] == ["", "", "", ""]


def test_metrics_csv_has_a_row_per_validation_with_aacc_miou_macc(plotted):
    assert read_csv(plotted.out_dir / "metrics.csv") == [
        ["step", "aAcc", "mIoU", "mAcc"], ["100", "90", "60", "65"], ["200", "90", "62.5", "67.5"],
    ]


def test_other_validation_metrics_follow_the_usual_three(tmp_path):
    scalars = write_scalars(tmp_path / "scalars.json", [
        training_line(10), {**validation_line(10, 50.0), "mDice": 70.0, "mFscore": 68.0},
    ])
    assert metric_columns(read_scalar_log(scalars).validation) == ["aAcc", "mIoU", "mAcc", "mDice", "mFscore"]


def test_the_plots_are_valid_png_images(plotted):
    for name in ("miou.png", "losses.png", "rewards.png"):
        with Image.open(plotted.out_dir / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 800


def test_every_file_written_is_listed(plotted):
    listed = {line.split()[1] for line in plotted.out.splitlines() if line.startswith("wrote ")}
    assert listed == {str(path) for path in plotted.out_dir.iterdir()}


def test_malformed_lines_are_skipped_with_their_line_numbers(plotted):
    warning = one_line_error(plotted.err)
    assert "skipped 1 malformed line" in warning and "(line 4)" in warning


def test_the_newest_timestamped_run_of_a_work_dir_is_read(plotted, work_dir):
    assert find_scalars(work_dir) == work_dir / "20240102_090000" / "vis_data" / "scalars.json"
    assert "20240102_090000/vis_data/scalars.json" in plotted.out


def test_a_run_folder_without_a_timestamp_name_counts_by_modification_time(tmp_path):
    older = mmengine_run(tmp_path / "work", "20240101_090000", [training_line(10)])
    renamed = mmengine_run(tmp_path / "work", "resumed", [training_line(20)])
    os.utime(renamed, (datetime(2023, 6, 1).timestamp(),) * 2)
    assert find_scalars(tmp_path / "work") == older
    os.utime(renamed, (datetime(2025, 6, 1).timestamp(),) * 2)
    assert find_scalars(tmp_path / "work") == renamed


def test_a_scalars_json_can_be_given_directly(work_dir):
    older = work_dir / "20240101_090000" / "vis_data" / "scalars.json"
    assert find_scalars(older) == older


def test_a_run_without_validation_writes_the_losses_and_says_no_metrics_were_found(capsys, tmp_path):
    scalars = write_scalars(tmp_path / "scalars.json", [training_line(10), training_line(20)])
    code, _, err, out_dir = plot(capsys, tmp_path, scalars)
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["loss.csv", "losses.png", "rewards.png"]
    assert "no validation metrics" in one_line_error(err)


def test_an_older_csv_that_this_run_cannot_replace_is_left_alone_and_named(capsys, tmp_path):
    scalars = write_scalars(tmp_path / "scalars.json", [validation_line(10, 5.0), validation_line(20, 6.0)])
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.csv").write_text("from another run\n")
    code, _, err, out_dir = plot(capsys, tmp_path, scalars)
    assert code == 0
    assert (out_dir / "loss.csv").read_text() == "from another run\n"
    assert "the older loss.csv" in one_line_error(err)


def test_a_run_without_reward_statistics_has_no_rewards_plot(capsys, tmp_path):
    scalars = write_scalars(tmp_path / "scalars.json", [training_line(10, reward=False), validation_line(10, 5.0)])
    code, _, err, out_dir = plot(capsys, tmp_path, scalars)
    assert code == 0
    assert not (out_dir / "rewards.png").exists()
    assert "no reward statistics" in one_line_error(err)


def test_the_baseline_is_named_in_the_listing(plotted):
    assert "miou.png  (mIoU at 2 validations, baseline ce/20231201_090000)" in plotted.out


def test_the_baseline_mIoU_is_drawn_on_the_same_axes(tmp_path, work_dir):
    baseline = mmengine_run(tmp_path / "ce", "20231201_090000", [
        training_line(100, reward=False), validation_line(100, 55.0), validation_line(200, 58.0)])
    figure = miou_figure(read_scalar_log(work_dir / "20240102_090000/vis_data/scalars.json"),
                         read_scalar_log(baseline), 0.6)
    lines = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].get_lines()}
    assert lines["baseline ce/20231201_090000"] == [55.0, 58.0]
    assert lines["baseline final: 58.00"] == [58.0, 58.0]


def test_a_baseline_with_one_validation_is_a_horizontal_reference_line(tmp_path, work_dir):
    baseline = write_scalars(tmp_path / "ce_model.json", [validation_line(0, 57.25)])
    figure = miou_figure(read_scalar_log(work_dir / "20240102_090000/vis_data/scalars.json"),
                         read_scalar_log(baseline), 0.6)
    reference = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("baseline")]
    assert [(line.get_label(), list(line.get_ydata())) for line in reference] == [
        ("baseline ce_model: 57.25", [57.25, 57.25])]


def test_the_miou_plot_has_raw_points_smoothed_curve_and_trend(tmp_path):
    log = ScalarLog(
        tmp_path / "scalars.json", [], [validation_line(s, m) for s, m in [(1, 1.0), (2, 2.0), (3, 3.0)]], []
    )
    ax = miou_figure(log, None, 0.5).axes[0]
    lines = {line.get_label().split(":")[0]: list(line.get_ydata()) for line in ax.get_lines()}
    assert lines[log.label] == [1.0, 2.0, 3.0]
    assert lines["smoothed (EMA 0.5)"] == pytest.approx([1, 5 / 3, 17 / 7])
    assert lines["linear trend"] == pytest.approx([1.0, 3.0])
    assert ax.get_ylabel() == "mIoU (%)" and ax.get_xlabel() == "iteration"


def test_tensorboard_smoothing_is_a_debiased_exponential_moving_average():
    # last = 0.5 last + 0.5 x, divided by 1 - 0.5^n: 1, 1.25 / 0.75, 2.125 / 0.875.
    assert tensorboard_smoothing([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 5 / 3, 17 / 7])


def test_smoothing_weight_zero_leaves_values_as_they_are():
    assert tensorboard_smoothing([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]


def test_smoothing_passes_nan_through_without_poisoning_later_values():
    smoothed = tensorboard_smoothing([1.0, float("nan"), 1.0], 0.6)
    assert smoothed[0] == smoothed[2] == pytest.approx(1.0)


def test_the_linear_trend_is_the_least_squares_line():
    slope, intercept = linear_trend([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0])
    assert (slope, intercept) == pytest.approx((2.0, 1.0))
    assert linear_trend([5], [1.0]) is None


def test_the_command_does_not_import_matplotlib_until_it_runs():
    code = "import sys, rewardpatch.plot; print(sorted({'numpy', 'matplotlib'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_missing_matplotlib_is_one_line_that_says_how_to_install_it(capsys, monkeypatch, tmp_path, work_dir):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err, _ = plot(capsys, tmp_path, work_dir)
    assert code == 2
    assert "pip install matplotlib" in one_line_error(err)


def test_a_missing_run_is_an_input_error(capsys, tmp_path):
    code, _, err, out_dir = plot(capsys, tmp_path, tmp_path / "nope")
    assert code == 2
    assert "no such file or directory" in one_line_error(err)
    assert not out_dir.exists()


def test_a_work_dir_without_scalars_is_an_input_error(capsys, tmp_path):
    (tmp_path / "work" / "20240101_090000" / "vis_data").mkdir(parents=True)
    code, _, err, out_dir = plot(capsys, tmp_path, tmp_path / "work")
    assert code == 2
    assert "no */vis_data/scalars.json (mmengine) or *.log.json (mmcv) under" in one_line_error(err)
    assert not out_dir.exists()


@pytest.mark.parametrize("content", ["", "\n\n", "not json\n{also not\n"])
def test_an_empty_run_is_an_input_error(capsys, tmp_path, content):
    scalars = tmp_path / "work" / "20240101_090000" / "vis_data" / "scalars.json"
    scalars.parent.mkdir(parents=True)
    scalars.write_text(content)
    code, _, err, out_dir = plot(capsys, tmp_path, tmp_path / "work")
    assert code == 2
    assert "holds no training or validation scalars" in one_line_error(err)
    assert not out_dir.exists()


def test_a_missing_baseline_is_an_input_error_and_writes_nothing(capsys, tmp_path, work_dir):
    code, _, err, out_dir = plot(capsys, tmp_path, work_dir, "--baseline", tmp_path / "nope")
    assert code == 2
    assert "Traceback" not in err
    assert "nope: no such file or directory" in err.strip().splitlines()[-1]
    assert not out_dir.exists()


def test_a_smoothing_weight_of_one_is_refused(capsys, tmp_path, work_dir):
    code, _, err, _ = plot(capsys, tmp_path, work_dir, "--smooth", 1)
    assert code == 2
    assert "--smooth" in one_line_error(err)


# A/B: `plot RUN_A RUN_B`, a resumed run's folders joined into one curve.

def class_table(ious):
    """The per-class table MMSeg's IoUMetric prints into <timestamp>/<timestamp>.log."""
    rule = "+------------+-------+-------+"
    rows = [f"| {name:^10} | {iou:5.2f} | {iou + 1:5.2f} |" for name, iou in ious.items()]
    return "\n".join(["2024/01/02 09:30:00 - mmengine - INFO - per class results:",
                      "2024/01/02 09:30:00 - mmengine - INFO - ", rule, "|   Class    |  IoU  |  Acc  |", rule,
                      *rows, rule, "2024/01/02 09:30:00 - mmengine - INFO - Iter(val) [10/10]  mIoU: 50.0"])


def text_log(work_dir, timestamp, *tables):
    path = work_dir / timestamp / f"{timestamp}.log"
    path.write_text("\n".join(["2024/01/02 09:00:00 - mmengine - INFO - Iter(train) [10/400]", *tables]) + "\n")


def make_ab(root, per_class=True):
    """A: CE continued, one folder; B: reward, resumed at 200 after logging a validation at 300 it redoes."""
    ce = root / "work_dirs" / "ce_continued"
    mmengine_run(ce, "20240101_090000", [
        line for step, miou in [(100, 50.0), (200, 51.0), (300, 51.5), (400, 52.0)]
        for line in (training_line(step, reward=False), validation_line(step, miou))])
    reward = root / "work_dirs" / "reward"
    mmengine_run(reward, "20240102_090000", [
        line for step, miou in [(100, 50.5), (200, 52.0), (300, 40.0)]
        for line in (training_line(step), validation_line(step, miou))])
    mmengine_run(reward, "20240103_090000", [
        line for step, miou in [(210, None), (300, 53.0), (400, 54.5)]
        for line in (training_line(step), *([validation_line(step, miou)] if miou else []))])
    if per_class:
        text_log(ce, "20240101_090000", class_table({"road": 90.0, "car": 40.0}),
                 class_table({"road": 95.0, "car": 50.0}))
        text_log(reward, "20240102_090000", class_table({"road": 10.0, "car": 10.0}))
        text_log(reward, "20240103_090000", class_table({"road": 96.0, "car": 55.5}))
    return ce, reward


def test_two_runs_give_one_csv_of_aligned_miou_and_their_difference(capsys, tmp_path):
    ce, reward = make_ab(tmp_path)
    code, out, err, out_dir = plot(capsys, tmp_path, ce, reward)
    assert code == 0, err
    assert read_csv(out_dir / "ab_miou.csv") == [
        ["step", "mIoU A: ce_continued", "mIoU B: reward", "B: reward - A: ce_continued"],
        ["100", "50", "50.5", "0.5"], ["200", "51", "52", "1"], ["300", "51.5", "53", "1.5"],
        ["400", "52", "54.5", "2.5"],
    ]
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "ab_miou.csv", "ab_miou.png", "ab_per_class.csv", "ab_per_class.png"]
    listed = {line.split()[1] for line in out.splitlines() if line.startswith("wrote ")}
    assert listed == {str(path) for path in out_dir.iterdir()}
    assert "20240102_090000/vis_data/scalars.json, " in out and "loss.csv" not in out


def test_a_resumed_run_is_joined_in_time_order_with_the_newer_folder_winning(tmp_path):
    from rewardpatch.plot import load_joined_run

    _, reward = make_ab(tmp_path)
    run = load_joined_run(reward, "B")
    assert [log.source.parent.parent.name for log in run.logs] == ["20240102_090000", "20240103_090000"]
    assert run.miou == {100: 50.5, 200: 52.0, 300: 53.0, 400: 54.5}
    assert [row["step"] for row in run.training] == [100, 200, 210, 300, 400]


def test_the_ab_figure_draws_both_runs_and_the_difference_at_common_steps(tmp_path):
    from rewardpatch.plot import ab_figure, load_joined_run

    ce, reward = make_ab(tmp_path)
    figure = ab_figure([load_joined_run(ce, "A"), load_joined_run(reward, "B")])
    top, bottom = figure.axes
    curves = {line.get_label().split(":")[0] + ":" + line.get_label().split(":")[1]: list(line.get_ydata())
              for line in top.get_lines()}
    assert curves["A: ce_continued"] == [50.0, 51.0, 51.5, 52.0]
    assert curves["B: reward"] == [50.5, 52.0, 53.0, 54.5]
    difference = next(line for line in bottom.get_lines() if line.get_label() == "B: reward - A: ce_continued")
    assert list(difference.get_xdata()) == [100, 200, 300, 400]
    assert list(difference.get_ydata()) == pytest.approx([0.5, 1.0, 1.5, 2.5])
    figure.savefig(tmp_path / "ab.png")
    with Image.open(tmp_path / "ab.png") as image:
        assert image.format == "PNG"


def test_the_per_class_difference_is_read_from_the_last_table_of_the_newest_text_log(capsys, tmp_path):
    ce, reward = make_ab(tmp_path)
    _, _, _, out_dir = plot(capsys, tmp_path, ce, reward)
    assert read_csv(out_dir / "ab_per_class.csv") == [
        ["class", "IoU A: ce_continued", "IoU B: reward", "B: reward - A: ce_continued"],
        ["road", "95", "96", "1"], ["car", "50", "55.5", "5.5"],
    ]


def test_without_per_class_tables_the_ab_plot_says_so_and_writes_the_miou_outputs(capsys, tmp_path):
    ce, reward = make_ab(tmp_path, per_class=False)
    code, _, err, out_dir = plot(capsys, tmp_path, ce, reward)
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["ab_miou.csv", "ab_miou.png"]
    assert "no per-class IoU table" in one_line_error(err)


def test_runs_without_common_validation_steps_leave_the_difference_empty(capsys, tmp_path):
    a = write_scalars(tmp_path / "a.json", [validation_line(100, 50.0)])
    b = write_scalars(tmp_path / "b.json", [validation_line(150, 51.0)])
    code, _, _, out_dir = plot(capsys, tmp_path, a, b)
    assert code == 0
    assert read_csv(out_dir / "ab_miou.csv")[1:] == [["100", "50", "", ""], ["150", "", "51", ""]]


@pytest.mark.parametrize("case, message", [
    ("baseline", "--baseline is for one RUN"),
    ("no-miou", "no mIoU among its validation lines"),
    ("missing", "nope: no such file or directory"),
])
def test_ab_errors_are_one_line_and_write_nothing(capsys, tmp_path, case, message):
    ce, reward = make_ab(tmp_path)
    args = {"baseline": [ce, reward, "--baseline", ce],
            "no-miou": [ce, write_scalars(tmp_path / "losses.json", [training_line(10)])],
            "missing": [ce, tmp_path / "nope"]}[case]
    code, _, err, out_dir = plot(capsys, tmp_path, *args)
    assert code == 2
    assert message in one_line_error(err)
    assert not out_dir.exists()


def test_a_folder_of_a_run_that_logged_nothing_is_left_out_with_a_note(capsys, tmp_path):
    ce, reward = make_ab(tmp_path, per_class=False)
    write_scalars(reward / "20240104_090000" / "vis_data" / "scalars.json", ["not json"])
    code, out, err, out_dir = plot(capsys, tmp_path, ce, reward)
    assert code == 0
    assert "holds no training or validation scalars" in err and "left out of" in err
    assert read_csv(out_dir / "ab_miou.csv")[-1] == ["400", "52", "54.5", "2.5"]


def mmcv_log(work_dir: Path, timestamp: str, points, classes=("road", "car")) -> Path:
    """<work_dir>/<timestamp>.log.json as mmcv 1.x's TextLoggerHook writes it (MMSeg 0.x): an
    environment line, then train lines and, after the one an evaluation followed, a val line whose
    "iter" is the validation loader's length and whose metrics are fractions."""
    lines = [{"env_info": "sys.platform: linux", "config": "model = dict(...)", "seed": 0}]
    for step, miou in points:
        lines.append({"mode": "train", "epoch": 1, "iter": step, "lr": 0.001, "decode.loss_ce_reward": 0.5,
                      "decode.reward_mean": 0.4, "loss": 0.5, "time": 0.3})
        if miou is not None:
            lines.append({"mode": "val", "epoch": 1, "iter": 500, "lr": 0.001, "aAcc": 0.95, "mIoU": miou,
                          "mAcc": 0.6, **{f"IoU.{name}": miou + i / 100 for i, name in enumerate(classes)},
                          **{f"Acc.{name}": 0.7 for name in classes}})
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{timestamp}.log.json"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_mmseg_0x_work_dirs_are_read_from_mmcv_logs_and_resumed_ones_joined(capsys, tmp_path):
    ce, reward = tmp_path / "ce", tmp_path / "reward"
    mmcv_log(ce, "20240101_090000", [(100, 0.5), (200, 0.51)])
    mmcv_log(reward, "20240102_090000", [(100, 0.505), (200, 0.3)])
    mmcv_log(reward, "20240103_090000", [(150, None), (200, 0.52)])  # resumed at 150: redoes 200
    code, out, err, out_dir = plot(capsys, tmp_path, ce, reward)
    assert code == 0, err
    assert read_csv(out_dir / "ab_miou.csv")[1:] == [["100", "50", "50.5", "0.5"], ["200", "51", "52", "1"]]
    assert read_csv(out_dir / "ab_per_class.csv")[1:] == [["road", "51", "52", "1"], ["car", "52", "53", "1"]]
    assert "malformed" not in err  # the environment line is not a malformed one

    code, out, err, single = plot(capsys, tmp_path / "one", reward / "20240102_090000.log.json")
    assert code == 0, err
    assert read_csv(single / "metrics.csv") == [["step", "aAcc", "mIoU", "mAcc"], ["100", "95", "50.5", "60"],
                                                ["200", "95", "30", "60"]]
    assert read_csv(single / "loss.csv")[0] == ["step", "loss", "decode.loss_ce_reward", "decode.reward_mean"]

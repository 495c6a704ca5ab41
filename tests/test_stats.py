"""`rewardpatch stats`: exact pixel counts per class, class weights, and its one-line errors."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from conftest import one_line_error, run_cli
from rewardpatch.stats import class_weights, count_values, weight_literal


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def table(out: str) -> list[list[str]]:
    """The header and rows of the printed table, each split into cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["class"])
    end = lines.index("", start)
    return [line.split() for line in lines[start:end]]


def report(capsys, tmp_path, ann_dir, *options):
    out_file = tmp_path / "report.json"
    code, out, err = run_cli(capsys, "stats", ann_dir, *options, "-o", out_file)
    assert code == 0, err
    return json.loads(out_file.read_text()), out, err


@pytest.fixture
def ann_dir(tmp_path):
    """Two 8-bit maps in nested folders: class 0 x6, 1 x3, 2 x1, ignore (255) x2."""
    root = tmp_path / "ann"
    save(root / "train" / "a.png", np.array([[0, 0, 0, 1], [1, 255, 2, 0]], np.uint8))
    save(root / "val" / "deep" / "b.png", np.array([[0, 0, 1, 255]], np.uint8))
    return root


def test_counts_every_class_exactly_over_nested_folders(capsys, tmp_path, ann_dir):
    data, _, _ = report(capsys, tmp_path, ann_dir, "--num-classes", 3)
    assert data["counts"] == [6, 3, 1]
    assert data["num_files"] == 2


def test_a_palette_png_is_counted_by_index_not_by_colour(capsys, tmp_path):
    image = Image.fromarray(np.array([[0, 1, 1], [2, 2, 2]], np.uint8)).convert("P")
    # Index 2 is painted the same colour as index 0: decoding to RGB would merge them.
    image.putpalette([10, 20, 30, 200, 0, 0, 10, 20, 30] + [0] * (3 * 253))
    image.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    data, _, _ = report(capsys, tmp_path, tmp_path, "--num-classes", 3)
    assert data["counts"] == [1, 2, 3]


def test_a_16_bit_png_is_counted_by_its_16_bit_values(capsys, tmp_path):
    save(tmp_path / "wide.png", np.array([[0, 1, 1, 255], [300, 1000, 1000, 2]], np.uint16))
    assert Image.open(tmp_path / "wide.png").mode.startswith("I;16")
    data, _, _ = report(capsys, tmp_path, tmp_path, "--num-classes", 3)
    assert data["counts"] == [1, 2, 1]
    assert data["ignored_pixels"] == 1
    assert data["out_of_range_values"] == {"300": 1, "1000": 2}


def test_a_1_bit_png_is_counted_as_zeros_and_ones(capsys, tmp_path):
    save(tmp_path / "binary.png", np.array([[False, True, True]]))
    assert Image.open(tmp_path / "binary.png").mode == "1"
    data, _, _ = report(capsys, tmp_path, tmp_path, "--num-classes", 2)
    assert data["counts"] == [1, 2]


@settings(max_examples=40, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16]), st.tuples(st.integers(1, 12), st.integers(1, 12)),
              elements=st.integers(0, 255)))
def test_counts_of_any_label_map_equal_numpy_bincount(pixels):
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    counts = np.bincount(pixels.ravel())
    expected = {value: int(counts[value]) for value in np.flatnonzero(counts)}
    assert count_values(io.BytesIO(png.getvalue())) == expected


def test_weights_are_smoothed_inverse_counts_scaled_to_sum_to_the_number_of_classes():
    # counts 6, 3, 1 and S = 0.1: 1/(6+1), 1/(3+1), 1/(1+1), times 3 / (25/28) = 3.36.
    assert class_weights([6, 3, 1], 0.1) == pytest.approx([0.48, 0.84, 1.68])


def test_smooth_zero_gives_plain_inverse_frequency():
    weights = class_weights([6, 3, 1], 0.0)
    assert weights == pytest.approx([3 * w / sum([1 / 6, 1 / 3, 1]) for w in (1 / 6, 1 / 3, 1)])


def test_the_class_weight_line_is_ready_to_paste_into_a_config(capsys, ann_dir):
    code, out, _ = run_cli(capsys, "stats", ann_dir, "--num-classes", 3, "--smooth", 0.1)
    assert code == 0
    assert "class_weight=[0.48, 0.84, 1.68]" in out.splitlines()


def test_weight_literals_keep_4_decimals_and_never_round_a_weight_to_zero():
    assert weight_literal(0.123456) == "0.1235"
    assert weight_literal(2.0) == "2.0"
    assert float(weight_literal(0.0000123456)) == pytest.approx(0.00001235)


def test_the_ignore_index_is_reported_and_left_out_of_frequencies(capsys, tmp_path, ann_dir):
    data, out, _ = report(capsys, tmp_path, ann_dir, "--num-classes", 3)
    assert data["ignored_pixels"] == 2
    assert data["labelled_pixels"] == 10
    assert data["frequencies"] == pytest.approx([0.6, 0.3, 0.1])
    assert "2 ignored (value 255)" in out


def test_another_ignore_index_can_be_chosen(capsys, tmp_path, ann_dir):
    data, _, _ = report(capsys, tmp_path, ann_dir, "--num-classes", 2, "--ignore-index", 2)
    assert data["counts"] == [6, 3]
    assert data["ignored_pixels"] == 1
    assert data["out_of_range_values"] == {"255": 2}


def test_values_outside_the_classes_are_counted_and_warned_about_in_one_line(capsys, tmp_path, ann_dir):
    save(ann_dir / "stray.png", np.array([[0, 7, 7, 9]], np.uint8))
    data, out, err = report(capsys, tmp_path, ann_dir, "--num-classes", 3)
    assert data["out_of_range_pixels"] == 3
    assert data["out_of_range_files"] == 1
    assert data["counts"] == [7, 3, 1]
    warning = one_line_error(err)
    assert "3 pixels in 1 of 3 label maps" in warning and "values 7, 9" in warning
    assert "3 out of range" in out


def test_reduce_zero_label_shifts_labels_as_mmseg_does(capsys, tmp_path):
    # ADE20K style: 0 is "other" (ignored), 1..N are the classes, 255 stays ignored.
    save(tmp_path / "ade.png", np.array([[0, 1, 2, 2, 3, 255]], np.uint8))
    data, _, _ = report(capsys, tmp_path, tmp_path, "--num-classes", 3, "--reduce-zero-label")
    assert data["counts"] == [1, 2, 1]
    assert data["ignored_pixels"] == 2
    assert data["reduce_zero_label"] is True


def test_class_names_appear_in_the_table(capsys, tmp_path, ann_dir):
    names = tmp_path / "names.txt"
    names.write_text("road\nsidewalk\nbuilding\n")
    code, out, _ = run_cli(capsys, "stats", ann_dir, "--num-classes", 3, "--names", names)
    assert code == 0
    assert [row[:3] for row in table(out)] == [
        ["class", "name", "pixels"], ["0", "road", "6"], ["1", "sidewalk", "3"], ["2", "building", "1"]
    ]


def test_the_table_has_count_frequency_and_weight_per_class(capsys, ann_dir):
    code, out, _ = run_cli(capsys, "stats", ann_dir, "--num-classes", 3, "--smooth", 0.1)
    assert code == 0
    assert table(out)[:2] == [["class", "pixels", "frequency", "weight"], ["0", "6", "60.0000%", "0.4800"]]


def test_the_json_report_has_the_documented_keys(capsys, tmp_path, ann_dir):
    names = tmp_path / "names.txt"
    names.write_text("road\nsidewalk\nbuilding\n")
    data, _, _ = report(capsys, tmp_path, ann_dir, "--num-classes", 3, "--names", names)
    assert {"counts", "frequencies", "weights", "num_files", "labelled_fraction", "ignored_pixels",
            "out_of_range_pixels", "num_classes", "ignore_index", "smooth", "names", "class_weight"} <= set(data)
    assert data["names"] == ["road", "sidewalk", "building"]
    assert data["smooth"] == 0.02


def test_two_workers_count_the_same_as_one(capsys, tmp_path):
    rng = np.random.default_rng(0)
    for index in range(12):
        save(tmp_path / "ann" / f"{index}.png", rng.integers(0, 6, (16, 24)).astype(np.uint8))
    one, _, _ = report(capsys, tmp_path, tmp_path / "ann", "--num-classes", 5, "--workers", 1)
    two, _, _ = report(capsys, tmp_path, tmp_path / "ann", "--num-classes", 5, "--workers", 2)
    assert one["counts"] == two["counts"] and one["out_of_range_pixels"] == two["out_of_range_pixels"]
    assert sum(one["counts"]) + one["out_of_range_pixels"] == 12 * 16 * 24


def test_suffix_selects_the_label_maps_among_other_pngs(capsys, tmp_path):
    save(tmp_path / "aachen_gtFine_labelTrainIds.png", np.array([[0, 1]], np.uint8))
    save(tmp_path / "aachen_gtFine_color.png", np.zeros((1, 2, 3), np.uint8))
    data, _, _ = report(capsys, tmp_path, tmp_path, "--num-classes", 2, "--suffix", "_labelTrainIds.png")
    assert data["counts"] == [1, 1]


def test_the_command_does_not_import_numpy_until_it_runs():
    code = "import sys, rewardpatch.stats; print(sorted({'numpy', 'PIL'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "nope", "no such directory"),
    (lambda root: save(root / "file.png", np.zeros((2, 2), np.uint8)), "not a directory"),
])
def test_an_ann_dir_that_is_not_a_directory_is_an_input_error(capsys, tmp_path, make, message):
    code, _, err = run_cli(capsys, "stats", make(tmp_path), "--num-classes", 3)
    assert code == 2
    assert message in one_line_error(err)


def test_a_folder_without_label_maps_names_the_suffix_it_searched(capsys, tmp_path):
    save(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    code, _, err = run_cli(capsys, "stats", tmp_path, "--num-classes", 3, "--suffix", "_labelTrainIds.png")
    assert code == 2
    assert "'_labelTrainIds.png'" in one_line_error(err)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_label_map_is_named(capsys, tmp_path, ann_dir, workers):
    broken = ann_dir / "train" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run_cli(capsys, "stats", ann_dir, "--num-classes", 3, "--workers", workers)
    assert code == 2
    assert f"cannot read label map {broken}" in one_line_error(err)


def test_a_truncated_label_map_is_named(capsys, tmp_path):
    png = save(tmp_path / "cut.png", np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8))
    png.write_bytes(png.read_bytes()[:-60])
    code, _, err = run_cli(capsys, "stats", tmp_path, "--num-classes", 3)
    assert code == 2
    assert f"cannot read label map {png}" in one_line_error(err)


def test_a_multi_channel_label_map_is_named(capsys, tmp_path):
    save(tmp_path / "colour.png", np.zeros((2, 2, 3), np.uint8))
    code, _, err = run_cli(capsys, "stats", tmp_path, "--num-classes", 3)
    assert code == 2
    line = one_line_error(err)
    assert f"{tmp_path / 'colour.png'} has 3 channels" in line and "--suffix" in line


def test_a_class_without_pixels_needs_a_positive_smooth(capsys, ann_dir):
    code, _, err = run_cli(capsys, "stats", ann_dir, "--num-classes", 4, "--smooth", 0)
    assert code == 2
    assert "class 3 has no pixels" in one_line_error(err)


def test_a_class_without_pixels_gets_a_finite_weight_by_default(capsys, tmp_path, ann_dir):
    data, _, _ = report(capsys, tmp_path, ann_dir, "--num-classes", 4)
    assert data["counts"][3] == 0
    assert max(data["weights"]) == data["weights"][3] < float("inf")


def test_maps_without_labelled_pixels_are_an_input_error(capsys, tmp_path):
    save(tmp_path / "void.png", np.full((2, 2), 255, np.uint8))
    code, _, err = run_cli(capsys, "stats", tmp_path, "--num-classes", 3)
    assert code == 2
    assert "no labelled pixels" in one_line_error(err)


def test_a_names_file_with_the_wrong_number_of_names_is_an_input_error(capsys, tmp_path, ann_dir):
    names = tmp_path / "names.txt"
    names.write_text("road\nsidewalk\n")
    code, _, err = run_cli(capsys, "stats", ann_dir, "--num-classes", 3, "--names", names)
    assert code == 2
    assert "has 2 class names but --num-classes is 3" in one_line_error(err)


def test_a_missing_pillow_is_one_line_that_says_how_to_install_it(capsys, monkeypatch, ann_dir):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    code, _, err = run_cli(capsys, "stats", ann_dir, "--num-classes", 3)
    assert code == 2
    assert "pip install pillow" in one_line_error(err)


def test_an_unwritable_report_is_an_input_error(capsys, tmp_path, ann_dir):
    code, _, err = run_cli(capsys, "stats", ann_dir, "--num-classes", 3, "-o", tmp_path / "missing" / "r.json")
    assert code == 2
    assert "cannot write" in one_line_error(err)


def test_sparse_labels_are_reported_with_the_avg_non_ignore_advice(capsys, tmp_path):
    # an active-learning budget: 2 of 100 pixels bought, the rest ignored
    sparse = np.full((10, 10), 255, np.uint8)
    sparse[0, :2] = [0, 1]
    save(tmp_path / "ann" / "a.png", sparse)
    data, out, _ = report(capsys, tmp_path, tmp_path / "ann", "--num-classes", 2)
    assert data["labelled_fraction"] == 0.02
    note = [line for line in out.splitlines() if line.startswith("sparse labels:")]
    assert note == ["sparse labels: 2.0% of the pixels are labelled; set avg_non_ignore=True on the loss "
                    "(MMSeg >= 0.23) so that cross-entropy and the reward average over the labelled pixels, not "
                    "all of them (50x larger steps); `rewardpatch config` carries it over to CrossEntropyRewardLoss"]


def test_dense_labels_get_no_sparse_label_note(capsys, tmp_path, ann_dir):
    data, out, _ = report(capsys, tmp_path, ann_dir, "--num-classes", 3)
    assert data["labelled_fraction"] == 10 / 12
    assert "sparse labels" not in out

"""Loaders, splits and forget sets (docs/design.md §5 "Presets", "Forget sets"; §7 validation and privacy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scrub_unlearning.data import (
    APPLICATIONS,
    RawDataset,
    build_class_forget_set,
    build_confusion_forget_set,
    build_forget_set,
    build_selective_forget_set,
    build_training_set,
    load_dataset,
    load_digits_dataset,
    load_npz_dataset,
    make_splits,
    make_task,
)
from scrub_unlearning.data.loaders import NPZ_REQUIRED_KEYS, SUPPORTED_SOURCES

DIGITS_SPLITS = {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
CONFUSE = {"confuse": {"classes": [3, 8], "size": 40}}


@pytest.fixture(scope="module")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="module")
def splits(digits):
    return make_splits(digits, DIGITS_SPLITS)


@pytest.fixture(scope="module")
def clean(splits):
    return build_training_set(splits, "clean", {}, seed=1)


@pytest.fixture(scope="module")
def confused(splits):
    return build_training_set(splits, "rc_confused", CONFUSE, seed=1)


def _ids_set(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


# --- loaders ---


def test_load_digits_dataset_shapes_dtypes_and_values(digits):
    from sklearn.datasets import load_digits

    assert digits.x_train.shape == (1797, 1, 8, 8)
    assert digits.x_train.dtype == torch.uint8
    assert int(digits.x_train.min()) == 0
    assert int(digits.x_train.max()) == 255  # 16 * 255 / 16
    assert digits.y_train.dtype == torch.int64
    assert digits.y_train.shape == (1797,)
    assert sorted(digits.y_train.unique().tolist()) == list(range(10))
    assert digits.num_classes == 10
    assert digits.image_shape == (1, 8, 8)
    assert digits.x_test is None and digits.y_test is None
    # ids are row indices in load_digits order, pixels stored as round(x * 255 / 16)
    bunch = load_digits()
    expected = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    assert np.array_equal(digits.x_train[:, 0].numpy(), expected)
    assert np.array_equal(digits.y_train.numpy(), bunch.target)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _npz_arrays(x_shape_train, x_shape_test, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=x_shape_train).astype(dtype)
    x_test = rng.integers(0, 256, size=x_shape_test).astype(dtype)
    y_train = np.arange(x_shape_train[0]) % 3
    y_test = np.arange(x_shape_test[0]) % 3
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def test_load_npz_grayscale_nhw_becomes_nchw_uint8(tmp_path):
    arrays = _npz_arrays((6, 5, 4), (3, 5, 4))
    raw = load_npz_dataset(_write_npz(tmp_path / "gray.npz", **arrays))
    assert raw.name == "gray"
    assert raw.x_train.shape == (6, 1, 5, 4) and raw.x_test.shape == (3, 1, 5, 4)
    assert raw.x_train.dtype == torch.uint8 and raw.x_test.dtype == torch.uint8
    assert np.array_equal(raw.x_train[:, 0].numpy(), arrays["x_train"])
    assert np.array_equal(raw.x_test[:, 0].numpy(), arrays["x_test"])
    assert raw.y_train.dtype == torch.int64
    assert raw.y_train.tolist() == arrays["y_train"].tolist()
    assert raw.y_test.tolist() == arrays["y_test"].tolist()
    assert raw.classes == ("0", "1", "2")


def test_load_npz_rgb_nhwc_becomes_nchw_uint8(tmp_path):
    arrays = _npz_arrays((4, 5, 6, 3), (2, 5, 6, 3), seed=1)
    arrays["classes"] = np.array(["cat", "dog", "fox"])
    raw = load_npz_dataset(_write_npz(tmp_path / "rgb.npz", **arrays))
    assert raw.x_train.shape == (4, 3, 5, 6) and raw.x_test.shape == (2, 3, 5, 6)
    assert raw.x_train.dtype == torch.uint8
    assert raw.image_shape == (3, 5, 6)
    assert np.array_equal(raw.x_train.numpy(), np.transpose(arrays["x_train"], (0, 3, 1, 2)))
    assert np.array_equal(raw.x_test.numpy(), np.transpose(arrays["x_test"], (0, 3, 1, 2)))
    assert raw.classes == ("cat", "dog", "fox")


def test_load_npz_missing_key_names_it_and_the_required_keys(tmp_path):
    arrays = _npz_arrays((4, 5, 5), (2, 5, 5))
    del arrays["y_test"]
    path = _write_npz(tmp_path / "partial.npz", **arrays)
    with pytest.raises(ValueError) as info:
        load_npz_dataset(path)
    message = str(info.value)
    assert "missing" in message
    assert "['y_test']" in message
    assert str(list(NPZ_REQUIRED_KEYS)) in message


@pytest.mark.parametrize("train_shape", [(4, 8, 8, 2), (4, 64), (4, 1, 8, 8, 1)])
def test_load_npz_unsupported_shape_names_the_shape(tmp_path, train_shape):
    arrays = _npz_arrays(train_shape, (2, 8, 8))
    path = _write_npz(tmp_path / "bad_shape.npz", **arrays)
    with pytest.raises(ValueError) as info:
        load_npz_dataset(path)
    message = str(info.value)
    assert str(train_shape) in message
    assert "x_train" in message
    assert "unsupported shape" in message


def test_load_npz_float_images_rejected(tmp_path):
    arrays = _npz_arrays((4, 5, 5), (2, 5, 5))
    arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255.0
    path = _write_npz(tmp_path / "float.npz", **arrays)
    with pytest.raises(ValueError) as info:
        load_npz_dataset(path)
    message = str(info.value)
    assert "float32" in message
    assert "uint8" in message


def test_load_npz_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "absent.npz"
    with pytest.raises(FileNotFoundError) as info:
        load_npz_dataset(path)
    assert str(path) in str(info.value)


def test_load_npz_stray_label_is_not_a_new_class(tmp_path):
    """One label 57 among 0..2 used to build a 58-class model silently."""
    arrays = _npz_arrays((6, 5, 5), (3, 5, 5))
    arrays["y_train"][2] = 57
    with pytest.raises(ValueError) as info:
        load_npz_dataset(_write_npz(tmp_path / "stray.npz", **arrays))
    message = str(info.value)
    assert "0..C-1" in message and "57" in message and "every class present" in message and "stray.npz" in message


def test_load_npz_class_without_training_example_rejected(tmp_path):
    arrays = _npz_arrays((6, 5, 5), (3, 5, 5))
    arrays["y_train"] = np.array([0, 0, 2, 2, 0, 2])  # class 1 only in the test part
    with pytest.raises(ValueError, match=r"no training example: \[1\]"):
        load_npz_dataset(_write_npz(tmp_path / "gap.npz", **arrays))


def test_load_npz_labels_checked_against_an_explicit_classes_array(tmp_path):
    arrays = _npz_arrays((6, 5, 5), (3, 5, 5))
    arrays["classes"] = np.array(["cat", "dog", "fox", "owl"])  # 4 names, class 3 never appears in y_train
    with pytest.raises(ValueError, match=r"'classes' array.*\[3\]"):
        load_npz_dataset(_write_npz(tmp_path / "names.npz", **arrays))
    arrays["classes"] = np.array(["cat", "dog"])  # label 2 is outside the 2 named classes
    with pytest.raises(ValueError, match=r"'y_train' holds label 2, outside 0..1"):
        load_npz_dataset(_write_npz(tmp_path / "names.npz", **arrays))
    arrays["classes"] = np.array(["cat", "dog", "fox"])
    assert load_npz_dataset(_write_npz(tmp_path / "names.npz", **arrays)).classes == ("cat", "dog", "fox")


@pytest.mark.parametrize("content", [b"x_train,y_train\n1,2\n", b"\x80\x04K\x01.", b""])
def test_load_npz_not_a_zip_file_gets_its_own_message(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_npz_dataset(path)
    message = str(info.value)
    assert "not an .npz (zip) file" in message and str(path) in message and "pickle" not in message


def test_load_npz_object_arrays_are_never_unpickled(tmp_path):
    arrays = _npz_arrays((6, 5, 5), (3, 5, 5))
    arrays["classes"] = np.array([{"name": "cat"}, "dog", "fox"], dtype=object)
    with pytest.raises(ValueError, match="'classes' holds Python objects, which are never unpickled"):
        load_npz_dataset(_write_npz(tmp_path / "objects.npz", **arrays))


def test_load_dataset_dispatches_and_rejects_unknown_source(tmp_path):
    arrays = _npz_arrays((4, 5, 5), (2, 5, 5))
    path = _write_npz(tmp_path / "ok.npz", **arrays)
    raw = load_dataset({"source": "npz", "path": str(path)})
    assert raw.x_train.shape == (4, 1, 5, 5)
    assert load_dataset({"source": "digits"}).x_train.shape == (1797, 1, 8, 8)
    with pytest.raises(ValueError) as info:
        load_dataset({"source": "mnist_from_the_web"})
    message = str(info.value)
    assert "'mnist_from_the_web'" in message
    for source in SUPPORTED_SOURCES:
        assert source in message
    with pytest.raises(ValueError) as info:
        load_dataset({"source": "npz"})
    assert "path" in str(info.value)


# --- splits ---


def test_digits_splits_disjoint_cover_all_ids_and_are_60_20_20(digits, splits):
    train, val, test = (_ids_set(splits.ids[name]) for name in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1797))
    assert len(train) + len(val) + len(test) == 1797
    assert abs(len(train) / 1797 - 0.6) < 0.01
    assert abs(len(val) / 1797 - 0.2) < 0.01
    assert abs(len(test) / 1797 - 0.2) < 0.01
    # all parts come from the training source; labels and pixels are those of the ids
    assert splits.sources == {"train": "train", "val": "train", "test": "train"}
    for name in ("train", "val", "test"):
        assert torch.equal(splits.y[name], digits.y_train[splits.ids[name]])
        assert torch.equal(splits.x[name], digits.x_train[splits.ids[name]])


def test_digits_splits_are_stratified(digits, splits):
    class_counts = torch.bincount(digits.y_train, minlength=10)
    for name, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = torch.bincount(splits.y[name], minlength=10)
        assert (counts > 0).all(), f"{name} misses a class: {counts.tolist()}"
        for cls in range(10):
            assert abs(int(counts[cls]) - fraction * int(class_counts[cls])) <= 1.0, (name, cls)


def test_digits_splits_deterministic_per_split_seed(digits, splits):
    again = make_splits(digits, dict(DIGITS_SPLITS))
    for name in ("train", "val", "test"):
        assert torch.equal(again.ids[name], splits.ids[name])
    assert again.mean == splits.mean and again.std == splits.std
    other = make_splits(digits, {**DIGITS_SPLITS, "split_seed": 1})
    assert not torch.equal(other.ids["val"], splits.ids["val"])


def test_digits_normalisation_is_training_split_statistics(splits):
    train = splits.x["train"].double() / 255.0
    assert splits.mean == pytest.approx((float(train.mean()),))
    assert splits.std == pytest.approx((float(train.std()),))


@pytest.fixture(scope="module")
def synthetic_raw():
    gen = torch.Generator().manual_seed(0)
    x_train = torch.randint(0, 128, (100, 1, 4, 4), generator=gen, dtype=torch.uint8)
    x_test = torch.randint(128, 256, (50, 1, 4, 4), generator=gen, dtype=torch.uint8)
    return RawDataset(
        name="synthetic",
        x_train=x_train, y_train=torch.arange(100) % 5,
        x_test=x_test, y_test=torch.arange(50) % 5,
        classes=("a", "b", "c", "d", "e"),
    )


def test_per_class_counts_exact_and_test_from_test_source(synthetic_raw):
    config = {"train_per_class": 6, "val_per_class": 4, "test_per_class": 3, "split_seed": 0}
    s = make_splits(synthetic_raw, config)
    assert [len(s.ids[n]) for n in ("train", "val", "test")] == [30, 20, 15]
    assert torch.bincount(s.y["train"], minlength=5).tolist() == [6] * 5
    assert torch.bincount(s.y["val"], minlength=5).tolist() == [4] * 5
    assert torch.bincount(s.y["test"], minlength=5).tolist() == [3] * 5
    assert not _ids_set(s.ids["train"]) & _ids_set(s.ids["val"])
    assert s.sources == {"train": "train", "val": "train", "test": "test"}
    # test rows index the test source: labels, pixels (all >= 128 there, < 128 in train) match it
    assert int(s.ids["test"].max()) < 50
    assert torch.equal(s.x["test"], synthetic_raw.x_test[s.ids["test"]])
    assert torch.equal(s.y["test"], synthetic_raw.y_test[s.ids["test"]])
    assert int(s.x["test"].min()) >= 128 and int(s.x["train"].max()) < 128
    assert torch.equal(s.x["val"], synthetic_raw.x_train[s.ids["val"]])
    table = s.table()
    assert set(table.loc[table["split"] == "test", "source"]) == {"test"}
    assert list(table.columns) == ["split", "source", "id", "label"]
    assert s.classes == ("a", "b", "c", "d", "e")
    # deterministic
    again = make_splits(synthetic_raw, dict(config))
    for name in ("train", "val", "test"):
        assert torch.equal(again.ids[name], s.ids[name])


def test_per_class_counts_too_large_raise(synthetic_raw):
    with pytest.raises(ValueError) as info:
        make_splits(synthetic_raw, {"train_per_class": 15, "val_per_class": 10, "test_per_class": 3})
    assert "val" in str(info.value) and "10" in str(info.value)


# --- forget sets ---


def test_selective_forget_set_size_class_seed_and_subset(digits, splits, clean):
    ids, labels = clean.ids, clean.labels
    forget = build_selective_forget_set(ids, labels, 5, 30, 10, seed=1)
    assert len(forget) == 30
    assert len(_ids_set(forget)) == 30
    assert (digits.y_train[forget] == 5).all()
    assert _ids_set(forget) <= _ids_set(splits.ids["train"])
    same = build_selective_forget_set(ids, labels, 5, 30, 10, seed=1)
    assert torch.equal(same, forget)
    other = build_selective_forget_set(ids, labels, 5, 30, 10, seed=2)
    assert _ids_set(other) != _ids_set(forget)
    assert (digits.y_train[other] == 5).all()


def test_class_forget_set_is_every_training_example_of_the_class(digits, splits, clean):
    forget = build_class_forget_set(clean.ids, clean.labels, 5, 10)
    expected = {int(i) for i in splits.ids["train"] if int(digits.y_train[i]) == 5}
    assert _ids_set(forget) == expected
    assert len(forget) == int((splits.y["train"] == 5).sum())
    # training ids of class 5 are all there, and no id of class 5 outside training appears
    assert not _ids_set(forget) & (_ids_set(splits.ids["val"]) | _ids_set(splits.ids["test"]))


@pytest.mark.parametrize("application,forget", [
    ("rb_class", {"class_id": 5}),
    ("rb_selective", {"class_id": 5, "size": 30}),
    ("up", {"class_id": 5, "size": 30}),
])
def test_make_task_retain_is_training_minus_forget(splits, clean, application, forget):
    table = build_forget_set(clean, {"application": application, "forget": forget}, 10, seed=1)
    forget_ids = torch.as_tensor(table["id"].to_numpy().copy())
    task = make_task(splits, clean, table, application, seed=1)
    n_train = len(splits.ids["train"])
    assert len(task.retain_x) == n_train - len(forget_ids)
    assert len(task.forget_x) == len(forget_ids)
    is_forget = torch.isin(splits.ids["train"], forget_ids)
    retain_ids = splits.ids["train"][~is_forget]
    assert not _ids_set(retain_ids) & _ids_set(forget_ids)
    assert torch.equal(task.retain_x, splits.x["train"][~is_forget])
    assert torch.equal(task.retain_y, splits.y["train"][~is_forget])
    assert torch.equal(task.forget_x, splits.x["train"][is_forget])
    assert (task.forget_y == 5).all()
    assert torch.equal(task.val_x, splits.x["val"]) and torch.equal(task.val_y, splits.y["val"])
    assert task.forget_classes == (5,)
    if application == "rb_class":
        assert task.kept_classes == (0, 1, 2, 3, 4, 6, 7, 8, 9)
        assert not (task.retain_y == 5).any()
    else:
        assert task.kept_classes == tuple(range(10))
        assert len(forget_ids) == 30
    assert task.swap == {}


def test_confused_training_set_swaps_exactly_half_of_each_class(splits, confused):
    true = splits.y["train"]
    assert torch.equal(confused.true_labels, true)
    assert torch.equal(confused.ids, splits.ids["train"])
    changed = confused.labels != true
    assert int(changed.sum()) == 40
    assert int((changed & (true == 3) & (confused.labels == 8)).sum()) == 20
    assert int((changed & (true == 8) & (confused.labels == 3)).sum()) == 20
    assert torch.equal(confused.labels[~changed], true[~changed])
    assert _ids_set(confused.ids[changed]) == _ids_set(confused.relabelled_ids)
    assert confused.confused_classes == (3, 8)
    # the split's own labels are not modified in place
    assert int((splits.y["train"] == 3).sum()) == int((true == 3).sum())


def test_confused_training_set_seeded(splits, confused):
    again = build_training_set(splits, "rc_confused", CONFUSE, seed=1)
    other = build_training_set(splits, "rc_confused", CONFUSE, seed=2)
    assert torch.equal(again.relabelled_ids, confused.relabelled_ids)
    assert _ids_set(other.relabelled_ids) != _ids_set(confused.relabelled_ids)


def test_rc_forget_set_is_exactly_the_relabelled_examples(digits, splits, confused):
    table = build_forget_set(confused, {"application": "rc"}, 10, seed=1)
    assert len(table) == 40
    assert set(table["id"]) == _ids_set(confused.relabelled_ids)
    true = digits.y_train[torch.as_tensor(table["id"].to_numpy().copy())].numpy()
    assert np.array_equal(table["true_label"].to_numpy(), true)
    swapped = np.where(true == 3, 8, 3)
    assert set(true.tolist()) == {3, 8}
    assert np.array_equal(table["label"].to_numpy(), swapped)
    task = make_task(splits, confused, table, "rc", seed=1)
    assert task.swap == {3: 8, 8: 3}
    assert len(task.forget_x) == 40 and len(task.retain_x) == len(splits.ids["train"]) - 40
    assert torch.equal(task.forget_y.sort().values, torch.as_tensor(np.sort(swapped)))
    # retain labels are all true labels (every mislabelled example went to the forget set)
    keep = ~torch.isin(splits.ids["train"], confused.relabelled_ids)
    assert torch.equal(task.retain_y, splits.y["train"][keep])
    assert task.forget_classes == (3, 8) and task.kept_classes == tuple(range(10))
    # forget_view_labels maps true labels to the stored wrong ones
    assert task.forget_view_labels(torch.tensor([3, 8, 1])).tolist() == [8, 3, 1]


def test_rc_scenario_on_clean_training_set_rejected(clean):
    with pytest.raises(ValueError) as info:
        build_forget_set(clean, {"application": "rc"}, 10, seed=1)
    assert "'clean'" in str(info.value) and "confuse" in str(info.value)


def test_unknown_application_rejected(clean):
    with pytest.raises(ValueError) as info:
        build_forget_set(clean, {"application": "forget_everything", "forget": {}}, 10, seed=1)
    assert "'forget_everything'" in str(info.value)
    for application in APPLICATIONS:
        assert application in str(info.value)


def test_selective_size_too_large_names_size_and_class(clean):
    available = int((clean.labels == 5).sum())
    with pytest.raises(ValueError) as info:
        build_selective_forget_set(clean.ids, clean.labels, 5, 500, 10, seed=1)
    message = str(info.value)
    assert "500" in message and "class 5" in message and str(available) in message
    # exactly the class size is allowed
    assert len(build_selective_forget_set(clean.ids, clean.labels, 5, available, 10, seed=1)) == available


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_selective_size_must_be_positive_integer(clean, size):
    with pytest.raises(ValueError) as info:
        build_selective_forget_set(clean.ids, clean.labels, 5, size, 10, seed=1)
    assert repr(size) in str(info.value)


@pytest.mark.parametrize("class_id", [12, -1, 10])
def test_class_id_out_of_range_names_id_and_range(clean, class_id):
    for build in (
        lambda: build_class_forget_set(clean.ids, clean.labels, class_id, 10),
        lambda: build_selective_forget_set(clean.ids, clean.labels, class_id, 5, 10, seed=1),
        lambda: build_confusion_forget_set(clean.ids, clean.labels, (class_id, 3), 4, 10, seed=1),
    ):
        with pytest.raises(ValueError) as info:
            build()
        message = str(info.value)
        assert str(class_id) in message and "0..9" in message


def test_class_id_missing_from_scenario_rejected(clean):
    with pytest.raises(ValueError) as info:
        build_forget_set(clean, {"application": "rb_class", "forget": {}}, 10, seed=1)
    assert "None" in str(info.value) and "0..9" in str(info.value)


def test_rc_odd_size_rejected(splits):
    with pytest.raises(ValueError) as info:
        build_training_set(splits, "rc_confused", {"confuse": {"classes": [3, 8], "size": 41}}, seed=1)
    assert "41" in str(info.value) and "even" in str(info.value)


def test_rc_size_larger_than_a_class_rejected(splits):
    with pytest.raises(ValueError) as info:
        build_training_set(splits, "rc_confused", {"confuse": {"classes": [3, 8], "size": 400}}, seed=1)
    message = str(info.value)
    assert "200" in message and "class 3" in message


def test_rc_same_class_twice_rejected(splits):
    with pytest.raises(ValueError) as info:
        build_training_set(splits, "rc_confused", {"confuse": {"classes": [3, 3], "size": 40}}, seed=1)
    assert "two different" in str(info.value)


# --- privacy ---


@pytest.mark.parametrize("application,forget", [
    ("rb_class", {"class_id": 5}),
    ("rb_selective", {"class_id": 5, "size": 30}),
    ("up", {"class_id": 5, "size": 30}),
    ("rc", {}),
])
def test_forget_table_holds_ids_and_labels_only(clean, confused, application, forget):
    training_set = confused if application == "rc" else clean
    table = build_forget_set(training_set, {"application": application, "forget": forget}, 10, seed=1)
    assert list(table.columns) == ["id", "label", "true_label"]
    assert len(table) > 0
    for column in table.columns:
        assert np.issubdtype(table[column].dtype, np.integer), column
    assert list(training_set.table().columns) == ["id", "label", "true_label"]

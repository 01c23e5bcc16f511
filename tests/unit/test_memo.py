"""This machine's cache of what scikit-learn makes (trainables.memo): the same arrays as the
library's, read back without importing it, made anew when the entry is damaged or a version
changes."""

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_moons
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from trainables import memo
from trainables.data import fold_indices, load_builtin, split


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test keeps its entries in a folder of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_an_entry_is_made_once_then_read_back_as_made():
    calls = []

    def make():
        calls.append(1)
        return {"a": np.arange(5, dtype=np.int64), "b": np.ones((2, 3), dtype=np.float32)}

    first = memo.remembered("thing", {"k": 1}, make)
    again = memo.remembered("thing", {"k": 1}, make)
    other = memo.remembered("thing", {"k": 2}, make)
    assert len(calls) == 2  # once for k=1, once for k=2
    for made in (again, other):
        assert made.keys() == first.keys()
        for name in first:
            assert made[name].dtype == first[name].dtype
            assert np.array_equal(made[name], first[name])


def test_a_damaged_entry_is_made_again():
    make = lambda: {"a": np.arange(3)}  # noqa: E731
    path = memo.entry("thing", {})
    memo.remembered("thing", {}, make)
    path.write_bytes(b"not an npz")
    assert np.array_equal(memo.remembered("thing", {}, make)["a"], np.arange(3))
    assert np.array_equal(np.load(path)["a"], np.arange(3))  # and kept whole again


def test_another_library_version_is_another_entry(monkeypatch):
    before = memo.entry("digits", {})
    real = memo.importlib.metadata.version
    monkeypatch.setattr(
        memo.importlib.metadata, "version", lambda name: "0.0" if name == "numpy" else real(name)
    )
    assert memo.entry("digits", {}) != before


@pytest.mark.parametrize("warm", [False, True])
def test_digits_and_its_split_are_scikit_learns_cold_and_warm(warm):
    if warm:
        load_builtin({"name": "digits"}, seed=3)
    digits = load_digits()
    x, y = (digits.images[:, None] / 16.0).astype(np.float32), digits.target
    train, val = train_test_split(np.arange(len(y)), test_size=0.2, random_state=3, stratify=y)
    data = load_builtin({"name": "digits"}, seed=3)
    assert np.array_equal(data.x_train.numpy(), x[train])
    assert np.array_equal(data.y_train.numpy(), y[train])
    assert np.array_equal(data.x_val.numpy(), x[val])
    assert np.array_equal(data.y_val.numpy(), y[val])


def test_splits_and_folds_are_keyed_by_targets_fraction_seed_and_stratification():
    x, y = make_moons(n_samples=60, noise=0.1, random_state=0)
    for fraction, seed, stratified in [(0.2, 0, True), (0.3, 0, True), (0.2, 1, False)]:
        got = split(y, fraction, seed, stratified)
        by = y if stratified else None
        want = train_test_split(
            np.arange(len(y)), test_size=fraction, random_state=seed, stratify=by
        )
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert not np.array_equal(split(y[::-1].copy(), 0.2, 0)[0], split(y, 0.2, 0)[0])
    numpy_seed = split(y, 0.2, np.int64(1), False)  # a seed numpy made: keyed all the same
    assert all(
        np.array_equal(a, b) for a, b in zip(numpy_seed, split(y, 0.2, 1, False), strict=True)
    )
    for stratified, kind in [(True, StratifiedKFold), (False, KFold)]:
        want = list(kind(n_splits=4, shuffle=True, random_state=2).split(x, y))
        for _ in range(2):  # made, then read back
            got = fold_indices(y, 4, 2, stratified)
            assert len(got) == 4
            for (fit, held), (fit_, held_) in zip(got, want, strict=True):
                assert np.array_equal(fit, fit_) and np.array_equal(held, held_)

"""modelio.py: safe model files: round trip, and refusal of files that are not ours."""

import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.naive_bayes import GaussianNB

from dicomnode.analysis.classify import GaussianMixtureBayes
from dicomnode.errors import ModelError
from dicomnode.modelio import FORMAT, ModelCard, load_card, load_model, resolve_model, save_model

CARD = ModelCard("demo", ("a", "b"), ("f0", "f1"), "synthetic", cv_accuracy=1.0, cv_scheme="none")
#: both ways in refuse the same files: the whole model, and its card alone (read without skops)
LOADERS = pytest.mark.parametrize("load", [load_model, load_card], ids=["model", "card"])


def _fit(est):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (30, 2)), rng.normal(4, 1, (30, 2))])
    return est.fit(X, np.array(["a"] * 30 + ["b"] * 30)), X


@pytest.mark.parametrize("est", [GaussianNB(), GaussianMixtureBayes(2)])
def test_round_trip_same_predictions(tmp_path, est):
    est, X = _fit(est)
    p = save_model(tmp_path / "m.skops", est, CARD)
    m = load_model(p, task="demo")
    np.testing.assert_allclose(m.estimator.predict_proba(X), est.predict_proba(X))
    assert m.card.classes == ("a", "b") and m.card.cv_accuracy == 1.0 and m.card.dicomnode_version
    assert (tmp_path / "m.card.json").is_file()
    with pytest.raises(ModelError, match="task"):
        load_model(p, task="scene")


@LOADERS
def test_plain_pickle_refused(tmp_path, load):
    p = tmp_path / "evil.skops"
    p.write_bytes(pickle.dumps({"format": FORMAT}))
    with pytest.raises(ModelError, match="not a dicomnode model file.*pickle"):
        load(p)


@LOADERS
def test_truncated_file_refused(tmp_path, load):
    est, _ = _fit(GaussianNB())
    p = save_model(tmp_path / "m.skops", est, CARD)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated|damaged"):
        load(p)


@LOADERS
def test_foreign_skops_object_refused(tmp_path, load):
    est, _ = _fit(GaussianNB())
    p = tmp_path / "foreign.skops"
    sio.dump(est, p)  # a valid skops file, but not our record
    with pytest.raises(ModelError, match="not a dicomnode model"):
        load(p)
    sio.dump({"format": FORMAT, "format_version": 99, "card": CARD.to_dict(), "estimator": est}, p)
    with pytest.raises(ModelError, match="version 99"):
        load(p)


@LOADERS
def test_untrusted_type_refused(tmp_path, load):
    est, _ = _fit(GaussianNB())
    p = save_model(tmp_path / "m.skops", est, CARD)
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["schema.json"] = members["schema.json"].replace(b'"sklearn.naive_bayes"', b'"os"')
    bad = tmp_path / "bad.skops"
    with zipfile.ZipFile(bad, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    with pytest.raises(ModelError, match="allowlist"):
        load(bad)


def test_missing_and_shipped():
    with pytest.raises(ModelError, match="not found"):
        resolve_model("no-such-model")
    m = load_model(resolve_model("scene"), task="scene")
    assert "neck" not in m.card.classes and m.card.cv_accuracy is not None


@pytest.mark.parametrize("name", ["scene", "findings"])
def test_shipped_models_built_without_skops_are_skops_own(name):
    """The shipped models (a scaler and a logistic regression in a pipeline) are built from their schema without
    skops: the same card and, bit for bit, the same probabilities as skops's own load; a fresh process that loads
    them never imports skops."""
    import subprocess
    import sys

    from dicomnode.modelio import TRUSTED_TYPES, _native

    path = resolve_model(name)
    mine, theirs = _native(path), sio.load(path, trusted=list(TRUSTED_TYPES))
    assert mine is not None and mine["card"] == theirs["card"]
    X = np.random.default_rng(1).normal(size=(200, len(mine["card"]["feature_names"]))) * 3
    assert np.array_equal(mine["estimator"].predict_proba(X), theirs["estimator"].predict_proba(X))
    assert load_model(path, task=name).card == ModelCard.from_dict(theirs["card"])
    code = (f"import sys; from dicomnode.modelio import load_model, resolve_model; "
            f"m = load_model(resolve_model({name!r}), task={name!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('skops', 'sklearn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # neither skops nor scikit-learn: a LinearModel in numpy


def test_card_alone_is_the_models_card_and_needs_no_skops(tmp_path):
    """The findings calibration reads a card only: the same card as the whole model's, read from the schema in a
    process that never imports skops (its import walks scikit-learn's estimator registry: ~0.5 CPU s)."""
    import subprocess
    import sys

    est, _ = _fit(GaussianMixtureBayes(2))
    extra = {"calibration": {"slope": 1.5, "by": {"PT": [0.25, -1, None, True]}}, "fill": {"x": 0.0}}
    p = save_model(tmp_path / "m.skops", est, ModelCard("demo", ("a", "b"), ("f0", "f1"), "synthetic", extra=extra))
    for path in (p, resolve_model("findings"), resolve_model("scene")):
        assert load_card(path) == load_model(path).card
    assert load_card(p).extra == extra
    with pytest.raises(ModelError, match="task"):
        load_card(p, task="scene")
    code = ("import sys; from dicomnode.modelio import load_card, resolve_model; "
            "c = load_card(resolve_model('findings'), task='findings'); "
            "assert c.extra.get('calibration'), 'no calibration on the card'; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('skops', 'sklearn', 'dask')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("shape", ["pipeline", "lone", "no-mean"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_models_read_without_sklearn_give_sklearns_probabilities(tmp_path, shape, n_classes):
    """Scaler + logistic regression (two classes: the logistic; more: the softmax), a lone logistic regression, a
    scaler without centring: read as a LinearModel, the same probabilities and labels bit for bit as scikit-learn's
    own estimator; another arrangement of the same types is left to skops."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from dicomnode.modelio import LinearModel

    rng = np.random.default_rng(n_classes)
    X = rng.normal(size=(120, 5)) * [1, 10, 0.1, 3, 50] + [0, 100, -2, 5, 1000]
    y = np.array([f"c{i}" for i in rng.integers(0, n_classes, 120)])
    X[:, 0] += (y == "c1") * 2.0
    if shape == "lone":  # no scaler: features of one scale, for lbfgs to converge
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    est = {"pipeline": Pipeline([("scale", StandardScaler()), ("logit", LogisticRegression(max_iter=2000))]),
           "lone": LogisticRegression(max_iter=5000),
           "no-mean": Pipeline([("scale", StandardScaler(with_mean=False)),
                                ("logit", LogisticRegression(max_iter=2000))])}[shape].fit(X, y)
    card = ModelCard("demo", tuple(str(c) for c in est.classes_), tuple(f"f{i}" for i in range(5)), "synthetic")
    m = load_model(save_model(tmp_path / "m.skops", est, card))
    assert isinstance(m.estimator, LinearModel)
    Xt = rng.normal(size=(300, 5)) * 20
    assert np.array_equal(m.estimator.predict_proba(Xt), est.predict_proba(Xt))
    assert np.array_equal(m.estimator.predict(Xt), est.predict(Xt))
    assert list(m.estimator.classes_) == list(est.classes_)
    with pytest.raises(ValueError, match="features"):
        m.estimator.predict_proba(Xt[:, :4])
    if shape == "pipeline":  # two scalers: not the shipped arrangement, built by skops (the same answers)
        odd = Pipeline([("a", StandardScaler()), ("b", StandardScaler()), ("logit", LogisticRegression())]).fit(X, y)
        loaded = load_model(save_model(tmp_path / "o.skops", odd, card)).estimator
        assert isinstance(loaded, Pipeline) and np.array_equal(loaded.predict_proba(Xt), odd.predict_proba(Xt))

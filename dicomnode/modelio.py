"""Model files: a trained classifier and its model card, saved and loaded safely.

A dicomnode model file is a `skops <https://skops.readthedocs.io>`_ file (a zip of a JSON schema and numpy arrays;
loading it never unpickles code) holding one dict::

    {"format": "dicomnode-model", "format_version": 1, "card": {...}, "estimator": <fitted scikit-learn object>}

:func:`load_model` refuses, with :class:`~dicomnode.errors.ModelError`:

* a file that is not a skops file (a pickle, a truncated download, anything else);
* a skops file whose schema names a type outside :data:`TRUSTED_TYPES` / :data:`TRUSTED_MODULE_PREFIXES` (checked on
  the schema before anything is built; skops's own check then runs with only our own types added to its defaults);
* a skops file that does not hold our dict, or one of another ``format_version``.

A model of the shipped kinds (:data:`NATIVE_TYPES`: a scaler and a logistic regression in a pipeline) is read from
its schema here, without importing skops or scikit-learn, as a :class:`LinearModel` (numpy; the same probabilities
bit for bit); any other is loaded by skops. :func:`load_card` reads
the card alone. Neither ever unpickles anything.

The card (:class:`ModelCard`) says what the model does and how well: task, classes, feature names, training data,
cross-validated accuracy by patient, dicomnode version, creation time. :func:`save_model` also writes it as JSON
beside the model (``NAME.card.json``) for people and reviews.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dicomnode.fsio import atomic_write_bytes
from dicomnode.errors import ModelError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MODELS_DIR",
    "TRUSTED_MODULE_PREFIXES",
    "TRUSTED_TYPES",
    "LinearModel",
    "LoadedModel",
    "ModelCard",
    "load_card",
    "load_model",
    "resolve_model",
    "save_model",
]

FORMAT = "dicomnode-model"
FORMAT_VERSION = 1
#: Where shipped models live (``dicomnode/models/NAME.skops``).
MODELS_DIR = Path(__file__).resolve().parent / "models"

#: Our own estimator types that a model may hold (skops does not trust them by default).
TRUSTED_TYPES: tuple[str, ...] = ("dicomnode.analysis.classify.GaussianMixtureBayes",)
#: Every other type in a model's schema must live in one of these modules (checked before loading).
TRUSTED_MODULE_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy", "builtins", "scipy.sparse", "collections",
                                            "skops.io")


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What a model is, what it was trained on and how well it does.

    Parameters
    ----------
    task : str
        Name of the task, e.g. "scene".
    classes : tuple of str
        Class names, in the estimator's order.
    feature_names : tuple of str
        The features the estimator expects, in order.
    training_data : str
        Plain description of the training data (series, patients, phantoms).
    cv_accuracy : float or None
        Accuracy cross-validated by patient (a patient's samples are never scored by a model that saw them);
        None when it could not be measured.
    cv_scheme : str
        How it was cross-validated, e.g. "leave-one-patient-out over 7 real patients".
    created : str
        ISO 8601 UTC time of training.
    dicomnode_version : str
        Version of dicomnode that trained it.
    extra : dict
        Anything else worth keeping: per-patient results, confusion matrix, limits, excluded classes.
    """

    task: str
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    training_data: str
    cv_accuracy: float | None = None
    cv_scheme: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    dicomnode_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.task:
            raise ValueError("ModelCard.task must be a non-empty name, e.g. 'scene'")
        if not self.classes or not self.feature_names:
            raise ValueError("ModelCard needs the model's classes and feature names")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["feature_names"] = list(self.feature_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["classes"] = tuple(str(c) for c in known.get("classes", ()))
        known["feature_names"] = tuple(str(c) for c in known.get("feature_names", ()))
        return cls(**known)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A loaded model: the fitted estimator, its card, and where it came from."""

    estimator: Any
    card: ModelCard
    path: Path


def _version() -> str:
    from dicomnode.results._common import SOFTWARE_VERSION  # noqa: PLC0415 - one source of the version string
    return SOFTWARE_VERSION


def save_model(path: Path | str, estimator: Any, card: ModelCard, *, write_card_json: bool = True) -> Path:
    """Write ``estimator`` and ``card`` to ``path`` as a dicomnode model file (atomic: tmp file, then rename).

    Returns the path. Raises :class:`ModelError` when the estimator holds a type that :func:`load_model` would
    refuse (so a model that cannot be loaded is never written) or lacks ``predict_proba``.
    """
    import skops.io as sio

    if not hasattr(estimator, "predict_proba"):
        raise ModelError(f"{type(estimator).__name__} gives no probabilities (predict_proba): it cannot be a "
                         "dicomnode classifier")
    path = Path(path)
    if not card.dicomnode_version:
        card = ModelCard(**{**asdict(card), "dicomnode_version": _version()})
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION, "card": card.to_dict(), "estimator": estimator}
    data = sio.dumps(obj)
    _check_types(_schema_types_from_bytes(data), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, suffix=".skops")
    if write_card_json:
        card_path = path.with_name(path.name.removesuffix(".skops") + ".card.json")
        card_path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def resolve_model(name_or_path: str | Path) -> Path:
    """A model file path from a path or the name of a shipped model ("scene" -> ``dicomnode/models/scene.skops``).

    Raises :class:`ModelError` when neither exists, listing the shipped models.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = MODELS_DIR / f"{name_or_path}.skops"
    if "/" not in str(name_or_path) and shipped.is_file():
        return shipped
    names = sorted(f.name.removesuffix(".skops") for f in MODELS_DIR.glob("*.skops"))
    raise ModelError(f"model {str(name_or_path)!r} not found: give the path of a .skops model file or the name of "
                     f"a shipped model ({', '.join(names) or 'none shipped'}); train one with `dicomnode train`")


def _walk_types(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        mod, cls = node.get("__module__"), node.get("__class__")
        if isinstance(mod, str) and isinstance(cls, str):
            out.add(f"{mod}.{cls}")
        for v in node.values():
            _walk_types(v, out)
    elif isinstance(node, list):
        for v in node:
            _walk_types(v, out)


def _schema_types(zf: zipfile.ZipFile) -> set[str]:
    schema = json.loads(zf.read("schema.json"))
    out: set[str] = set()
    _walk_types(schema, out)
    return out


def _schema_types_from_bytes(data: bytes) -> set[str]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return _schema_types(zf)


def _check_types(types: set[str], where: str) -> None:
    bad = sorted(t for t in types if t not in TRUSTED_TYPES and not t.startswith(TRUSTED_MODULE_PREFIXES))
    if bad:
        raise ModelError(f"{where}: holds types outside dicomnode's allowlist: {', '.join(bad)}; a dicomnode model "
                         "holds scikit-learn/numpy objects and dicomnode's own estimators only. Do not load files "
                         "from unknown sources; retrain with `dicomnode train`")


class _NotPlain(Exception):
    """A schema node :func:`_plain` does not read: the file is read by skops after all."""


#: The estimator types :func:`load_model` reads itself from a model's schema (the shipped models' types), as a
#: :class:`LinearModel`, without importing skops (whose import walks scikit-learn's whole estimator registry:
#: ~0.5-0.7 CPU s, ~480 modules and 20 MB in a fresh process) or scikit-learn (~1 CPU s with scipy.stats, 56 MB).
#: A model holding any other type, or these in another arrangement, is read by skops, as before.
NATIVE_TYPES: frozenset[str] = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
})
#: numpy scalar types a schema's array node may name (skops stores a scalar as a 0-d array of its type).
_NUMPY_SCALARS = frozenset({"float64", "float32", "int64", "int32", "bool_"})


def _plain(node: Any, zf: "zipfile.ZipFile | None" = None) -> Any:
    """The value of a skops schema node, built as skops builds it, for the few kinds of node a dicomnode model
    holds: JSON values (``json.loads`` of the content), dicts with str keys, lists, tuples, and with ``zf`` (the
    model's zip) numpy arrays (``np.load`` without pickles) and objects of :data:`NATIVE_TYPES` (as a
    :class:`_Fitted` record of their attributes, which :func:`_linear` turns into a :class:`LinearModel`).
    :class:`_NotPlain` for anything else."""
    if not isinstance(node, dict):
        raise _NotPlain
    loader, content = node.get("__loader__"), node.get("content")
    module, name = node.get("__module__"), node.get("__class__")
    if module == "builtins":
        if loader == "JsonNode" and node.get("is_json") is True and isinstance(content, str):
            return json.loads(content)
        if loader == "ListNode" and name == "list" and isinstance(content, list):
            return [_plain(v, zf) for v in content]
        if loader == "TupleNode" and name == "tuple" and isinstance(content, list):
            return tuple(_plain(v, zf) for v in content)
        if loader == "DictNode" and name == "dict" and isinstance(content, dict):
            keys = node.get("key_types") or {}
            kinds = keys.get("content") if keys.get("__loader__") == "ListNode" else None
            if not isinstance(kinds, list) or len(kinds) != len(content) or not all(
                    isinstance(k, dict) and k.get("__loader__") == "TypeNode" and k.get("__module__") == "builtins"
                    and k.get("__class__") == "str" for k in kinds):
                raise _NotPlain  # keys of another type than str: skops converts them
            return {str(k): _plain(v, zf) for k, v in content.items()}
        raise _NotPlain
    if zf is None:
        raise _NotPlain
    if loader == "NdArrayNode" and node.get("type") == "numpy" and module == "numpy" and isinstance(node.get("file"),
                                                                                                     str):
        import io

        import numpy as np

        arr = np.load(io.BytesIO(zf.read(node["file"])), allow_pickle=False)
        if name == "ndarray":
            return arr
        if name in _NUMPY_SCALARS:
            return getattr(np, name)(arr)
        raise _NotPlain
    if loader == "ObjectNode" and f"{module}.{name}" in NATIVE_TYPES:
        attrs = _plain(content, zf) if content is not None else {}
        if not isinstance(attrs, dict):
            raise _NotPlain
        return _Fitted(f"{module}.{name}", attrs)
    raise _NotPlain


class _Fitted:
    """A fitted estimator of :data:`NATIVE_TYPES` as read from a schema: its type and attributes."""

    __slots__ = ("kind", "attrs")

    def __init__(self, kind: str, attrs: dict[str, Any]) -> None:
        self.kind, self.attrs = kind, attrs


def _holds_fitted(obj: Any) -> bool:
    if isinstance(obj, _Fitted):
        return True
    if isinstance(obj, dict):
        return any(_holds_fitted(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_fitted(v) for v in obj)
    return False


class LinearModel:
    """A fitted scikit-learn ``Pipeline(StandardScaler, LogisticRegression)`` (or a lone ``LogisticRegression``)
    evaluated in numpy: the shipped models' kind, loaded without importing scikit-learn (about 1 CPU s and 56 MB in a
    fresh job process, with scipy.stats). The same operations in the same order as scikit-learn 1.9
    (``transform``: ``X -= mean_; X /= scale_``; ``decision_function``: ``X @ coef_.T + intercept_``;
    ``predict_proba``: the logistic of the decision for two classes, its softmax for more), so the same
    probabilities bit for bit (tests/test_modelio.py)."""

    __slots__ = ("classes_", "mean_", "scale_", "coef_", "intercept_", "n_features_in_")

    def __init__(self, classes: Any, coef: Any, intercept: Any, *, mean: Any = None, scale: Any = None) -> None:
        import numpy as np

        self.classes_ = np.asarray(classes)
        self.coef_ = np.asarray(coef, dtype=float)
        self.intercept_ = np.asarray(intercept, dtype=float)
        self.mean_ = None if mean is None else np.asarray(mean, dtype=float)
        self.scale_ = None if scale is None else np.asarray(scale, dtype=float)
        self.n_features_in_ = int(self.coef_.shape[-1])
        if self.coef_.ndim != 2 or len(self.classes_) < 2 or (
                self.coef_.shape[0] != (1 if len(self.classes_) == 2 else len(self.classes_))):
            raise ValueError(f"a logistic regression of {len(self.classes_)} classes with coefficients of shape "
                             f"{self.coef_.shape}")

    def decision_function(self, X: Any) -> Any:
        import numpy as np

        X = np.array(X, dtype=float, ndmin=2)  # a copy, as scikit-learn's check_array in transform
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model expects {self.n_features_in_}")
        if self.mean_ is not None:
            X -= self.mean_
        if self.scale_ is not None:
            X /= self.scale_
        scores = X @ self.coef_.T + self.intercept_
        return scores.reshape(-1) if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> Any:
        import numpy as np
        from scipy.special import expit

        d = self.decision_function(X)
        if d.ndim == 1:
            expit(d, out=d)
            return np.stack([1 - d, d], axis=1)
        d -= d.max(axis=1).reshape((-1, 1))
        np.exp(d, out=d)
        d /= d.sum(axis=1).reshape((-1, 1))
        return d

    def predict(self, X: Any) -> Any:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


_SCALER = "sklearn.preprocessing._data.StandardScaler"
_LOGISTIC = "sklearn.linear_model._logistic.LogisticRegression"


def _linear(est: Any) -> LinearModel:
    """The :class:`LinearModel` of a schema's ``Pipeline(StandardScaler, LogisticRegression)`` or lone
    ``LogisticRegression``; :class:`_NotPlain` for any other shape (skops then builds it)."""
    scaler, logit = None, est
    if isinstance(est, _Fitted) and est.kind == "sklearn.pipeline.Pipeline":
        steps = est.attrs.get("steps")
        if not (isinstance(steps, list) and len(steps) == 2 and all(isinstance(t, tuple) and len(t) == 2
                                                                    for t in steps)):
            raise _NotPlain
        scaler, logit = steps[0][1], steps[1][1]
        if not (isinstance(scaler, _Fitted) and scaler.kind == _SCALER):
            raise _NotPlain
    if not (isinstance(logit, _Fitted) and logit.kind == _LOGISTIC):
        raise _NotPlain
    a = logit.attrs
    if any(k not in a for k in ("classes_", "coef_", "intercept_")):
        raise _NotPlain  # not fitted
    if a.get("multi_class") == "ovr":
        raise _NotPlain  # one-vs-rest probabilities (older scikit-learn): skops builds it
    mean = scale = None
    if scaler is not None:
        sa = scaler.attrs
        mean = sa.get("mean_") if sa.get("with_mean", True) else None
        scale = sa.get("scale_") if sa.get("with_std", True) else None
    try:
        return LinearModel(a["classes_"], a["coef_"], a["intercept_"], mean=mean, scale=scale)
    except ValueError as exc:
        raise _NotPlain from exc


def _checked_schema(path: Path | str) -> tuple[Path, Any]:
    """The schema of a model file after the checks both loaders make: the file exists, is a skops zip whose members
    pass their CRCs, and names only allowed types (:func:`_check_types`). :class:`ModelError` saying which and what
    to do otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found; give the path of a .skops model or train one with "
                         "`dicomnode train`")
    try:
        with zipfile.ZipFile(path) as zf:
            if "schema.json" not in zf.namelist():
                raise ModelError(f"{path}: a zip file but not a skops model (no schema.json); not a dicomnode model")
            bad = zf.testzip()
            if bad is not None:
                raise ModelError(f"{path}: damaged (member {bad} fails its CRC); copy or train the model again")
            schema = json.loads(zf.read("schema.json"))
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path}: not a dicomnode model file (not a skops zip: {exc}); pickles and other formats "
                         "are refused because loading them can run code; the file may also be truncated. Use a "
                         "model written by `dicomnode train` or scripts/train_default_models.py") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot be read as a skops model ({type(exc).__name__}: {exc})") from exc
    types: set[str] = set()
    _walk_types(schema, types)
    _check_types(types, str(path))
    return path, schema


def load_card(path: Path | str, *, task: str | None = None) -> ModelCard:
    """The card of a dicomnode model file, read from its schema without building the estimator.

    Needs neither skops nor scikit-learn when the card holds only plain values (as :func:`save_model` writes it):
    the findings calibration (a card's ``extra``) costs no import of scikit-learn's estimator registry, which
    ``import skops.io`` walks (about 0.5-0.7 CPU s and 480 modules in a fresh process). The same checks as
    :func:`load_model` on the file (a skops zip, CRCs, every type in the schema allowed, our format and version,
    the task); a card with anything else in it is read by :func:`load_model`.

    Raises
    ------
    ModelError
        As :func:`load_model`.
    """
    path, schema = _checked_schema(path)
    top = schema.get("content") if isinstance(schema, dict) and schema.get("__loader__") == "DictNode" else None
    try:
        if not isinstance(top, dict) or _plain(top.get("format")) != FORMAT:
            raise _NotPlain
        version = _plain(top.get("format_version"))
        card_d = _plain(top.get("card"))
    except _NotPlain:
        return load_model(path, task=task).card  # not a card of plain values: skops reads (and judges) it
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: dicomnode model format version {version!r}, this dicomnode reads version "
                         f"{FORMAT_VERSION}; train the model again with this version")
    try:
        card = ModelCard.from_dict(dict(card_d or {}))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: the model card is incomplete ({exc}); train the model again") from exc
    if task is not None and card.task != task:
        raise ModelError(f"{path}: a model for task {card.task!r}, not {task!r}; give a {task!r} model")
    return card


def _native(path: Path) -> Any:
    """The object a model file holds, built by :func:`_plain` when every node of it is one it reads (the types
    of :data:`NATIVE_TYPES`); None otherwise. Called after the file's checks (zip, CRCs, allowed types)."""
    try:
        with zipfile.ZipFile(path) as zf:
            obj = _plain(json.loads(zf.read("schema.json")), zf)
        if isinstance(obj, dict) and "estimator" in obj:
            obj["estimator"] = _linear(obj["estimator"])
        if _holds_fitted(obj):
            raise _NotPlain  # a native type somewhere else than as the estimator: skops builds it
        return obj
    except _NotPlain:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged member or attribute: said as skops's failures are
        raise ModelError(f"{path}: could not be loaded ({type(exc).__name__}: {exc}); the file is damaged or was "
                         "written by an incompatible scikit-learn; train the model again") from exc


def _skops_load(path: Path) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
        unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if unexpected:
            raise ModelError(f"{path}: skops reports untrusted types {', '.join(unexpected)}; refused")
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - skops raises many kinds on damaged content
        raise ModelError(f"{path}: skops could not load it ({type(exc).__name__}: {exc}); the file is damaged or "
                         "was written by an incompatible skops/scikit-learn; train the model again") from exc


def load_model(path: Path | str, *, task: str | None = None) -> LoadedModel:
    """Load a dicomnode model file safely.

    Parameters
    ----------
    path : Path or str
        A ``.skops`` file written by :func:`save_model`.
    task : str, optional
        When given, the card's task must be this one.

    Raises
    ------
    ModelError
        The file is missing, not a skops file (e.g. a pickle or a truncated file), holds untrusted types, is not a
        dicomnode model, is of another format version, or is for another task. The message says which and what
        to do.
    """
    path, _ = _checked_schema(path)
    obj = _native(path)
    if obj is None:  # a type of its own: skops builds (and judges) it
        obj = _skops_load(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ModelError(f"{path}: a skops file, but not a dicomnode model (it holds {type(obj).__name__}, not a "
                         f"'{FORMAT}' record); write models with `dicomnode train`")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(f"{path}: dicomnode model format version {version!r}, this dicomnode reads version "
                         f"{FORMAT_VERSION}; train the model again with this version")
    try:
        card = ModelCard.from_dict(dict(obj.get("card") or {}))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: the model card is incomplete ({exc}); train the model again") from exc
    est = obj.get("estimator")
    if not hasattr(est, "predict_proba"):
        raise ModelError(f"{path}: the estimator {type(est).__name__} gives no probabilities; not usable")
    if task is not None and card.task != task:
        raise ModelError(f"{path}: a model for task {card.task!r}, not {task!r}; give a {task!r} model")
    return LoadedModel(est, card, path)

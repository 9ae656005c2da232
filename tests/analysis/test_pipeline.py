"""The runner releases the working image and the class posteriors once no later step reads them."""

import numpy as np
import pytest

from dicomnode.analysis.pipeline import READABLE, STEP_READS, STEPS, Context, class_statistics, run_steps, step
from dicomnode.analysis.volume import Volume
from dicomnode.steps import registry

SEEN: list[tuple[str, bool, bool]] = []


def _probe(name: str):
    def fn(ctx: Context, params) -> None:
        SEEN.append((name, ctx.posteriors is not None, ctx.volume is not ctx.original))
    return fn


@pytest.fixture
def probes():
    names = {"t_make": ("volume", "posteriors"), "t_reads_post": ("posteriors",), "t_reads_none": ()}
    for n, reads in names.items():
        step(n, reads=reads)(_probe(n))

    @step("t_producer", reads=("volume",))
    def _producer(ctx: Context, params) -> None:
        ctx.volume = ctx.volume.with_array(ctx.volume.array + np.float32(1))
        ctx.posteriors = np.zeros((2,) + ctx.volume.shape, dtype=np.uint8)

    step("t_unknown")(_probe("t_unknown"))  # says nothing: reads everything
    SEEN.clear()
    yield
    for n in list(names) + ["t_producer", "t_unknown"]:
        STEPS.pop(n, None)
        STEP_READS.pop(n, None)


def _ctx() -> Context:
    v = Volume(np.zeros((4, 5, 6), dtype=np.float32), (1.0, 1.0, 1.0), modality="MR", unit="")
    return Context(volume=v, original=v)


def test_intermediates_released_after_their_last_reader(probes):
    ctx = _ctx()
    run_steps(ctx, ["t_producer", "t_reads_post", "t_reads_none", "t_reads_none"], {})
    # the posteriors' reader still saw them, and the working image was already the original again (nobody reads it)
    assert SEEN == [("t_reads_post", True, False), ("t_reads_none", False, False), ("t_reads_none", False, False)]
    assert ctx.posteriors is None and ctx.volume is ctx.original


def test_nothing_released_before_a_step_that_says_nothing_or_after_the_last(probes):
    ctx = _ctx()
    run_steps(ctx, ["t_producer", "t_reads_none", "t_unknown"], {})
    assert SEEN == [("t_reads_none", True, True), ("t_unknown", True, True)]
    ctx = _ctx()
    SEEN.clear()
    run_steps(ctx, ["t_producer"], {})  # a partial run (e.g. up to detect): the caller still has what it made
    assert ctx.posteriors is not None and ctx.volume is not ctx.original


def test_between_steps_runs_before_each_step_after_the_release(probes):
    """The job's hook (it gives freed memory back to the system) runs before every step, once the intermediates
    that step and the later ones do not read are gone, and before the step's meter starts."""
    ctx = _ctx()
    calls: list[tuple[int, bool, bool]] = []
    metered: list[int] = []

    class Meter:
        peak_rss_mb = 0.0

        def __enter__(self):
            metered.append(len(calls))
            return self

        def __exit__(self, *exc):
            return None

    run_steps(ctx, ["t_producer", "t_reads_post", "t_reads_none"], {}, meter=Meter,
              between_steps=lambda: calls.append((len(SEEN), ctx.posteriors is not None,
                                                  ctx.volume is not ctx.original)))
    # before t_producer: nothing made yet; before t_reads_post: the working image already let go, the posteriors
    # not; before t_reads_none: both gone
    assert calls == [(0, False, False), (0, True, False), (1, False, False)]
    assert metered == [1, 2, 3]


def test_reads_outside_the_tracked_fields_refused():
    with pytest.raises(ValueError, match="only"):
        step("t_bad", reads=("labels",))


def test_shipped_steps_declare_what_they_read():
    registry()
    assert STEP_READS["features"] == frozenset() and STEP_READS["scene"] == frozenset()
    # detect reads only the posteriors' class statistics, which the runner keeps when it releases them
    assert STEP_READS["detect"] == {"volume", "class_stats"} and STEP_READS["correct"] == {"volume", "posteriors"}
    assert set(STEP_READS) >= {"foreground", "enhance", "denoise", "segment", "correct", "features", "measure",
                               "scene", "classify", "match", "detect", "synthesize"}


def test_released_posteriors_leave_their_class_statistics(probes):
    """When the runner lets go of the posteriors before a step that reads their class statistics, it keeps the
    per-class mean and SD of the working image they weight (what detect needs of them), computed as from the
    posteriors themselves; when no later step reads them, it does not compute them."""
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 10.0, (8, 10, 12)).astype(np.float32)
    v = Volume(img, (1.0, 1.0, 1.0), modality="MR", unit="")
    post = np.stack([np.where(img > 100, 255, 0), np.where(img > 100, 0, 255)]).astype(np.uint8)

    @step("t_post", reads=("volume", "posteriors"))
    def _post(ctx: Context, params) -> None:
        ctx.posteriors, ctx.classes = post, ("bright", "dark")

    @step("t_stats", reads=("class_stats",))
    def _stats(ctx: Context, params) -> None:
        pass

    try:
        ctx = Context(volume=v, original=v)
        run_steps(ctx, ["t_post", "t_reads_none"], {})
        assert ctx.posteriors is None and ctx.class_stats is None  # no later step reads them
        ctx = Context(volume=v, original=v)
        run_steps(ctx, ["t_post", "t_reads_none", "t_stats"], {})
        assert ctx.posteriors is None
        assert ctx.class_stats == class_statistics(img, post)
        (m_bright, m_dark), (s_bright, s_dark) = ctx.class_stats
        assert m_bright == pytest.approx(img[::2, ::2, ::2][img[::2, ::2, ::2] > 100].mean(), rel=1e-5)
        assert m_dark < 100 < m_bright and 0 < s_bright < 10 and 0 < s_dark < 10
        assert class_statistics(img, np.zeros_like(post)) is None
    finally:
        for n in ("t_post", "t_stats"):
            STEPS.pop(n, None)
            STEP_READS.pop(n, None)


def test_a_step_is_told_what_the_later_steps_read(probes):
    """While a step runs, ``ctx.later_reads`` is what the steps after it read (the last reader of the working image
    may let go of it); outside a run, everything (nothing may be let go)."""
    seen = []

    @step("t_later", reads=("volume",))
    def _later(ctx: Context, params) -> None:
        seen.append(ctx.later_reads)

    try:
        ctx = _ctx()
        assert ctx.later_reads == READABLE
        run_steps(ctx, ["t_later", "t_reads_post", "t_later", "t_reads_none", "t_later"], {})
        assert seen == [frozenset({"posteriors", "volume"}), frozenset({"volume"}), frozenset()]
        assert ctx.later_reads == READABLE
    finally:
        STEPS.pop("t_later", None)
        STEP_READS.pop("t_later", None)

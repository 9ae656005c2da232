"""``dicomnode evaluate``: run a set of cases through the node's own chain and score them against their truth.

:mod:`~dicomnode.evaluation.cases` reads the case file, :mod:`~dicomnode.evaluation.truth` puts the truth on the
series' grid, :mod:`~dicomnode.evaluation.metrics` holds the pure metrics, :mod:`~dicomnode.evaluation.run` runs
and scores, :mod:`~dicomnode.evaluation.render` draws one PNG per case and :mod:`~dicomnode.evaluation.report`
formats the table. See docs/evaluation.md.
"""

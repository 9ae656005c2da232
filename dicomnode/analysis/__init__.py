"""Pure analysis functions over numpy arrays with explicit spacing.

Nothing in this package reads files, talks to the network, or imports pydicom, pynetdicom, highdicom or sqlite3
(``tests/analysis/test_purity.py`` checks it).
"""

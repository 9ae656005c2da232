"""``dicomnode radiomics``: IBSI features of an RTSTRUCT/SEG region (see :mod:`dicomnode.radiomics_cli`)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from dicomnode import radiomics_cli
    radiomics_cli.add_parser(subparsers)

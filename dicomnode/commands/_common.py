"""What several sub-commands share: the node's config (or exit 2 naming the error) and its index (or exit 1)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dicomnode.errors import ConfigError


def load_config_file(path: str | None) -> Any:
    """The config from ``path``, else ``$DICOMNODE_CONFIG``, else the embedded defaults (raises ConfigError)."""
    from dicomnode.config import load_config
    path = path or os.environ.get("DICOMNODE_CONFIG") or None
    return load_config(path)


def config_or_exit(path: str | None) -> Any:
    """:func:`load_config_file`, or exit 2 with the config's errors on stderr."""
    try:
        return load_config_file(path)
    except ConfigError as e:
        print(f"dicomnode: invalid configuration\n{e}", file=sys.stderr)
        raise SystemExit(2) from None


def node_db(a: argparse.Namespace) -> tuple[Any, Any]:
    """(config, index) of the node that ``a.config`` names; exit 1 when that node has no data folder yet."""
    from dicomnode.node import DB_NAME, open_database
    cfg = config_or_exit(getattr(a, "config", None))
    if not (Path(cfg.node.data_dir) / DB_NAME).exists():
        print(f"dicomnode: no node data in {cfg.node.data_dir} (start it with `dicomnode serve` first, or pass "
              f"--config with the node's file)", file=sys.stderr)
        raise SystemExit(1)
    return cfg, open_database(cfg)

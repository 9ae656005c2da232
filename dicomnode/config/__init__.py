"""Configuration: the node's settings (:mod:`dicomnode.config.node`) and the radiomics settings
(:mod:`dicomnode.config.radiomics`, imported on its own: it pulls in the analysis package).

The node's names are re-exported here, so ``from dicomnode.config import load_config`` is the way in.
"""

from dicomnode.config.node import (CONF_DIR, DEFAULT_PROFILE_BY_MODALITY, GENERIC_PROFILE, PROFILES_DIR, Destination,
                                   ExportSection, MatchValue, MetricsSection, NodeConfig, NodeSection, Peer, Profile,
                                   RetentionSection, Rule, SeriesSection, TlsConfig, WorkersSection, apply_overrides,
                                   effective_config, load_config, load_default_profiles, parse_config, redact,
                                   shadowed_rules, to_toml)

__all__ = ["CONF_DIR", "DEFAULT_PROFILE_BY_MODALITY", "GENERIC_PROFILE", "PROFILES_DIR", "Destination", "ExportSection",
           "MatchValue", "MetricsSection", "NodeConfig", "NodeSection", "Peer", "Profile", "RetentionSection", "Rule",
           "SeriesSection", "TlsConfig", "WorkersSection", "apply_overrides", "effective_config", "load_config",
           "load_default_profiles", "parse_config", "redact", "shadowed_rules", "to_toml"]

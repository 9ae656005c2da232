"""Routing: which rule applies to a complete series, and so which profile runs and where results go.

Rules are tried in the order of the config file and **the first matching rule applies** (like a mail filter);
list several destinations in one rule to send one result to many places. With no ``[[rules]]`` at all (the embedded
defaults), every image series is processed with its modality's default profile and the results stay in the data
folder. With rules and no match, the series is kept and logged, and no job runs.

Objects that are not images (SEG, SR, RT, presentation states...) and objects this node made itself (Manufacturer
``dicomnode``, or a Series Instance UID under the node's own registered UID root) never start a job, so a PACS that
routes everything back cannot make a loop. (The shared ``2.25.`` UUID root says nothing about who made a UID, so it
is not used for that test.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from dicomnode.config import NodeConfig, Profile, Rule

DEFAULT_RULE = "(default)"
NO_RULE_MATCHED = "no rule matched"  # the reason of an image series no rule takes: it is kept as "unrouted"
OUR_MANUFACTURER = "dicomnode"  # what results/ writes as Manufacturer


@dataclass(frozen=True, slots=True)
class RouteDecision:
    rule: Rule | None
    profile: Profile | None
    destinations: tuple[str, ...]
    reason: str           # why there is no job, or which rule matched
    radiomics: str | None = None     # settings of a radiomics job on the regions of an RTSTRUCT/SEG

    @property
    def runs_job(self) -> bool:
        return self.profile is not None or self.radiomics is not None


def route(config: NodeConfig, tags: Mapping[str, str], *, is_image: bool, is_region: bool = False) -> RouteDecision:
    """Decide for one series from its header tags (keyword -> string) and whether it holds images or regions.

    Region objects (RTSTRUCT, SEG) from elsewhere are matched against the rules that have ``radiomics`` set, in
    order; image series against the others. A radiomics job waits for the image series the regions reference.
    """
    series_uid = tags.get("SeriesInstanceUID", "")
    own_root = config.node.uid_root != "2.25." and series_uid.startswith(config.node.uid_root)
    if own_root or tags.get("Manufacturer", "").strip() == OUR_MANUFACTURER:
        return RouteDecision(None, None, (), "made by this node (or another dicomnode): never processed again")
    if is_region:
        for rule in config.rules:
            if rule.radiomics is not None and rule.matches(tags):
                return RouteDecision(rule, None, rule.destinations, f"rule {rule.name} (radiomics)",
                                     radiomics=rule.radiomics)
        return RouteDecision(None, None, (), "region object: no radiomics rule matched")
    if not is_image:
        return RouteDecision(None, None, (), f"not an image series (SOP class {tags.get('SOPClassUID', '?')})")
    modality = tags.get("Modality", "")
    if not config.rules:
        return RouteDecision(Rule(DEFAULT_RULE, {}), config.profile_for(None, modality), (),
                             f"no rules configured: default profile for modality {modality or '?'}")
    for rule in config.rules:
        if rule.radiomics is None and rule.matches(tags):
            return RouteDecision(rule, config.profile_for(rule.profile, modality), rule.destinations,
                                 f"rule {rule.name}")
    return RouteDecision(None, None, (), NO_RULE_MATCHED)


def quiet_seconds(config: NodeConfig, decision: RouteDecision) -> float:
    if decision.rule is not None and decision.rule.quiet_seconds is not None:
        return decision.rule.quiet_seconds
    return config.series.quiet_seconds

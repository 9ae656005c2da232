"""Configuration: one TOML file, validated once into frozen dataclasses.

Every error in a file is reported (not just the first), each naming the key, the value and the fix. With no file,
the embedded defaults serve: AE title ``DICOMNODE``, port 11112, data in ``./dicomnode-data``, SQLite, local
workers, no destination. ``conf/dicomnode.toml`` is a commented example of every key.

Analysis profiles: the shipped defaults live in ``conf/profiles/<name>.toml`` (``ct``, ``mr``, ``pet``,
``generic``); ``[profiles.NAME]`` tables in the node's file add profiles or replace a shipped one whole. With
``extends = "BASE"`` a profile starts from another one (shipped or in the file; ``[profiles.ct] extends = "ct"``
changes the shipped ``ct``): ``steps``, ``outputs`` and ``version`` are the base's unless given, and each step table
overrides only the keys it names (see :func:`_extend`).
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dicomnode.errors import ConfigError, ConfigErrors
from dicomnode.web.settings import HttpSection, parse_http

CONF_DIR = Path(__file__).parent.parent / "conf"  # a link to the repository's conf/, shipped as package data
PROFILES_DIR = CONF_DIR / "profiles"

DEFAULT_PROFILE_BY_MODALITY = {"CT": "ct", "MR": "mr", "PT": "pet"}
GENERIC_PROFILE = "generic"

# DICOM result types a rule may ask for; "seg" and "sr" are always made when a profile segments.
_AE_MAX = 16


def _ae_ok(ae: object) -> bool:
    return isinstance(ae, str) and 0 < len(ae.strip()) <= _AE_MAX and "\\" not in ae and ae.isprintable()


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """DICOM TLS. With ``enabled``, the SCP speaks TLS only; certificate and key are PEM files.

    The same certificate and key are presented, and ``ca_certificates`` verifies the peer, when the node sends to a
    destination with ``tls = true`` (whether or not ``enabled`` is set: that switch is for receiving only).
    """

    enabled: bool = False
    certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    require_peer_certificate: bool = True


@dataclass(frozen=True, slots=True)
class NodeSection:
    ae_title: str = "DICOMNODE"
    bind: str = "0.0.0.0"
    port: int = 11112
    data_dir: Path = Path("dicomnode-data")
    max_pdu_bytes: int = 0  # 0 = unlimited
    uid_root: str = "2.25."  # UUID-derived UIDs (no registration needed); or your organisation's root
    log_format: str = "text"  # "text" | "json"
    min_free_disk_mb: int = 0  # refuse new associations below this much free space; 0 = off
    tls: TlsConfig = field(default_factory=TlsConfig)
    max_associations: int = 32           # open associations before new ones are refused (transient)
    max_associations_per_peer: int = 8   # open associations from one address: one peer cannot take every slot
    idle_timeout_seconds: float = 60.0   # an association silent this long is aborted
    artim_timeout_seconds: float = 30.0  # a connection without an A-ASSOCIATE-RQ this long is closed


@dataclass(frozen=True, slots=True)
class Peer:
    ae_title: str
    host: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesSection:
    quiet_seconds: float = 30.0
    check_interval_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False
    ca_certificates: str = ""  # PEM CAs that verify this destination (TLS); default: [node.tls] ca_certificates

    @property
    def address(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


MatchValue = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """A routing rule: DICOM keyword -> value (exact), list of values (any of), or glob (``*``, ``?``, ``[...]``).

    Matching is case-sensitive on the stored value, after stripping padding; a keyword absent from the series
    matches only the empty string.
    """

    name: str
    match: Mapping[str, MatchValue]
    profile: str | None = None
    destinations: tuple[str, ...] = ()
    quiet_seconds: float | None = None
    radiomics: str | None = None          # settings name or file: this rule computes features of RTSTRUCT/SEG regions
    roi_names: tuple[str, ...] = ()       # globs of the ROI names / segment labels to measure; () = all

    def matches(self, tags: Mapping[str, str]) -> bool:
        for keyword, want in self.match.items():
            have = str(tags.get(keyword, "") or "").strip()
            options = want if isinstance(want, tuple) else (want,)
            if not any(fnmatch.fnmatchcase(have, str(o)) for o in options):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Profile:
    """An analysis profile: an ordered list of steps and the parameters of each."""

    name: str
    steps: tuple[str, ...]
    params: Mapping[str, Mapping[str, Any]]
    version: str = "1"
    outputs: tuple[str, ...] = ("seg", "sr")
    extends: str | None = None  # the profile it was built on (``extends = "ct"``), for config show and messages


@dataclass(frozen=True, slots=True)
class WorkersSection:
    count: int = 2
    backend: str = "local"  # "local" | "dask"
    scheduler: str = ""
    transfer: str = "shared"  # "shared" | "bytes" (dask)
    max_attempts: int = 3
    retry_backoff_seconds: tuple[float, ...] = (10.0, 60.0, 600.0)
    lease_seconds: float = 3600.0
    memory_limit_mb: int = 0  # dask LocalCluster: per worker; 0 = Dask's default (host memory / count)
    resources: Mapping[str, float] = field(default_factory=dict)  # dask resources one job needs
    dashboard_address: str = ":8787"  # dask LocalCluster dashboard; "" = none, ":0" = any free port
    connect_timeout_seconds: float = 10.0  # dask scheduler connection


@dataclass(frozen=True, slots=True)
class ExportSection:
    max_attempts: int = 5
    retry_backoff_seconds: tuple[float, ...] = (10.0, 60.0, 300.0, 900.0)
    timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class MetricsSection:
    """Prometheus ``/metrics`` over HTTP; ``port = 0`` (default) serves none.

    With ``[http] enabled`` the console's server serves ``/metrics`` (one HTTP server in the node); it then needs a
    login or API token unless ``public = true``. Served alone on ``port`` (no ``[http]``), it is public, as before.
    """

    port: int = 0
    bind: str = "127.0.0.1"
    public: bool = False


@dataclass(frozen=True, slots=True)
class RetentionSection:
    """What the node deletes, and when. 0 days = keep for ever (default).

    Received instances of a series are deleted ``delete_received_after_days`` after the series was last handled:
    completed, its jobs finished and its results sent. Never deleted: an open series, a series with a pending or
    running job or an unsent result; with ``keep_failed``, also a series whose latest job failed or whose result
    was dead-lettered, until an operator retries it.
    """

    delete_received_after_days: float = 0.0
    keep_failed: bool = True
    check_interval_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node: NodeSection = field(default_factory=NodeSection)
    peers: tuple[Peer, ...] = ()
    series: SeriesSection = field(default_factory=SeriesSection)
    destinations: tuple[Destination, ...] = ()
    rules: tuple[Rule, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    workers: WorkersSection = field(default_factory=WorkersSection)
    export: ExportSection = field(default_factory=ExportSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    http: HttpSection = field(default_factory=HttpSection)
    source: str = "<defaults>"
    warnings: tuple[str, ...] = ()  # not errors, but likely mistakes (shadowed rules); config check prints them

    def destination(self, name: str) -> Destination:
        for d in self.destinations:
            if d.name == name:
                return d
        raise KeyError(name)

    def profile_for(self, rule_profile: str | None, modality: str) -> Profile:
        name = rule_profile or DEFAULT_PROFILE_BY_MODALITY.get(modality.upper(), GENERIC_PROFILE)
        return self.profiles[name]


# ---------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------

class _Collector:
    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def err(self, key: str, value: object, fix: str) -> None:
        self.errors.append(ConfigError(key, value, fix))

    def table(self, doc: Mapping[str, Any], key: str) -> dict[str, Any]:
        v = doc.get(key, {})
        if not isinstance(v, dict):
            self.err(key, v, f"[{key}] must be a table")
            return {}
        return v

    def unknown(self, table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
        for k in table:
            if k not in allowed:
                close = ", ".join(sorted(allowed))
                self.err(f"{prefix}.{k}" if prefix else k, table[k], f"unknown key; allowed here: {close}")

    def string(self, t: Mapping[str, Any], key: str, prefix: str, default: str | None = None,
               required: bool = False) -> str | None:
        if key not in t:
            if required:
                self.err(f"{prefix}.{key}", None, "required; add it")
            return default
        v = t[key]
        if not isinstance(v, str):
            self.err(f"{prefix}.{key}", v, "must be a string in quotes")
            return default
        return v

    def number(self, t: Mapping[str, Any], key: str, prefix: str, default: float, *, minimum: float | None = None,
               integer: bool = False, maximum: float | None = None, example: str = "") -> Any:
        if key not in t:
            return default
        v = t[key]
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type:
            kind = "a whole number" if integer else "a number"
            self.err(f"{prefix}.{key}", v, f"must be {kind}{', e.g. ' + example if example else ''}")
            return default
        if minimum is not None and v < minimum:
            self.err(f"{prefix}.{key}", v, f"must be >= {minimum}{', e.g. ' + example if example else ''}")
            return default
        if maximum is not None and v > maximum:
            self.err(f"{prefix}.{key}", v, f"must be <= {maximum}")
            return default
        return v

    def boolean(self, t: Mapping[str, Any], key: str, prefix: str, default: bool) -> bool:
        if key not in t:
            return default
        v = t[key]
        if not isinstance(v, bool):
            self.err(f"{prefix}.{key}", v, "must be true or false (no quotes)")
            return default
        return v

    def ae(self, t: Mapping[str, Any], key: str, prefix: str, default: str | None = None,
           required: bool = False) -> str | None:
        v = self.string(t, key, prefix, default, required)
        if v is not None and not _ae_ok(v):
            self.err(f"{prefix}.{key}", v, "an AE title is 1 to 16 printable characters, no backslash, e.g. 'PACS'")
            return default
        return v.strip() if v else v

    def backoff(self, t: Mapping[str, Any], key: str, prefix: str, default: tuple[float, ...]) -> tuple[float, ...]:
        if key not in t:
            return default
        v = t[key]
        if (not isinstance(v, list) or not v
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in v)):
            self.err(f"{prefix}.{key}", v, "must be a non-empty list of seconds >= 0, e.g. [10, 60, 600]")
            return default
        return tuple(float(x) for x in v)


def _parse_node(c: _Collector, doc: Mapping[str, Any], base_dir: Path) -> NodeSection:
    t = c.table(doc, "node")
    c.unknown(t, "node", {"ae_title", "bind", "port", "data_dir", "max_pdu_bytes", "uid_root", "log_format",
                          "min_free_disk_mb", "tls", "max_associations", "max_associations_per_peer",
                          "idle_timeout_seconds", "artim_timeout_seconds"})
    d = NodeSection()
    data_dir = c.string(t, "data_dir", "node", str(d.data_dir))
    dd = Path(data_dir).expanduser() if data_dir else d.data_dir
    if not dd.is_absolute() and "data_dir" in t:
        dd = (base_dir / dd)
    uid_root = c.string(t, "uid_root", "node", d.uid_root) or d.uid_root
    from dicomnode.uids import is_valid_uid
    if not is_valid_uid(uid_root.rstrip(".")) or len(uid_root.rstrip(".")) > 40:
        c.err("node.uid_root", uid_root, "a UID prefix of digits and dots, at most 40 characters, e.g. '2.25.' "
              "(UUID-derived) or your organisation's registered root")
        uid_root = d.uid_root
    if not uid_root.endswith("."):
        uid_root += "."
    log_format = c.string(t, "log_format", "node", d.log_format)
    if log_format not in ("text", "json"):
        c.err("node.log_format", log_format, "use 'text' or 'json'")
        log_format = d.log_format
    tls = _parse_tls(c, t.get("tls", {}), "node.tls", base_dir)
    return NodeSection(
        ae_title=c.ae(t, "ae_title", "node", d.ae_title) or d.ae_title,
        bind=c.string(t, "bind", "node", d.bind) or d.bind,
        port=c.number(t, "port", "node", d.port, minimum=0, maximum=65535, integer=True, example="11112"),
        data_dir=dd,
        max_pdu_bytes=c.number(t, "max_pdu_bytes", "node", d.max_pdu_bytes, minimum=0, integer=True,
                               example="0 (unlimited) or 131072"),
        uid_root=uid_root,
        log_format=log_format or "text",
        min_free_disk_mb=c.number(t, "min_free_disk_mb", "node", d.min_free_disk_mb, minimum=0, integer=True,
                                  example="1024"),
        tls=tls,
        **_parse_node_limits(c, t, d),
    )


def _parse_node_limits(c: _Collector, t: Mapping[str, Any], d: NodeSection) -> dict[str, Any]:
    """[node] association limits and timers."""
    limits = {
        "max_associations": c.number(t, "max_associations", "node", d.max_associations, minimum=1, integer=True,
                                     example="32"),
        "max_associations_per_peer": c.number(t, "max_associations_per_peer", "node", d.max_associations_per_peer,
                                              minimum=1, integer=True, example="8"),
        "idle_timeout_seconds": c.number(t, "idle_timeout_seconds", "node", d.idle_timeout_seconds, minimum=1,
                                         example="60"),
        "artim_timeout_seconds": c.number(t, "artim_timeout_seconds", "node", d.artim_timeout_seconds, minimum=1,
                                          example="30"),
    }
    if limits["max_associations_per_peer"] > limits["max_associations"]:
        c.err("node.max_associations_per_peer", limits["max_associations_per_peer"],
              f"must be <= node.max_associations ({limits['max_associations']}), or one peer can take every slot")
        limits["max_associations_per_peer"] = limits["max_associations"]
    return limits


def _parse_tls(c: _Collector, t: Any, prefix: str, base_dir: Path) -> TlsConfig:
    if not isinstance(t, dict):
        c.err(prefix, t, f"[{prefix}] must be a table")
        return TlsConfig()
    c.unknown(t, prefix, {"enabled", "certificate", "private_key", "ca_certificates", "require_peer_certificate"})
    enabled = c.boolean(t, "enabled", prefix, False)

    def path(key: str) -> str:
        v = c.string(t, key, prefix, "") or ""
        if v and not Path(v).is_absolute():
            v = str(base_dir / v)
        if enabled and key != "ca_certificates" and not v:
            c.err(f"{prefix}.{key}", v, "required when TLS is enabled: the path of a PEM file")
        if enabled and v and not Path(v).is_file():
            c.err(f"{prefix}.{key}", v, "no such file; give the path of a PEM file")
        return v

    return TlsConfig(enabled=enabled, certificate=path("certificate"), private_key=path("private_key"),
                     ca_certificates=path("ca_certificates"),
                     require_peer_certificate=c.boolean(t, "require_peer_certificate", prefix, True))


def _parse_list_of_tables(c: _Collector, doc: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    v = doc.get(key, [])
    if not isinstance(v, list) or any(not isinstance(x, dict) for x in v):
        c.err(key, v, f"use [[{key}]] tables")
        return []
    return v


def _parse_profile(c: _Collector, name: str, t: Any, prefix: str) -> Profile | None:
    if not isinstance(t, dict):
        c.err(prefix, t, "a profile is a table with `steps = [...]`")
        return None
    steps = t.get("steps")
    if not isinstance(steps, list) or any(not isinstance(s, str) for s in steps):
        c.err(f"{prefix}.steps", steps, "a list of step names, e.g. [\"denoise\", \"segment\", \"features\"]")
        return None
    from dicomnode.steps import step_names
    STEP_NAMES = step_names()
    for i, s in enumerate(steps):
        if s not in STEP_NAMES:
            c.err(f"{prefix}.steps[{i}]", s, f"unknown step; known steps: {', '.join(sorted(STEP_NAMES))}")
    params: dict[str, dict[str, Any]] = {}
    for k, v in t.items():
        if k in ("steps", "version", "outputs", "description"):
            continue
        if isinstance(v, dict) and k == "load":  # how io/load.py reads the series: [profiles.X.load] phase = ...
            phase = v.get("phase", "first")
            if set(v) - {"phase"}:
                c.err(f"{prefix}.load", v, "the only load option is phase")
            if not (phase in ("first", "last", "all") or (type(phase) is int and phase >= 1)):
                c.err(f"{prefix}.load.phase", phase, "\"first\", \"last\", \"all\" or a phase number >= 1: which "
                      "temporal phase of a series with several images per position to analyse")
            params[k] = dict(v)
        elif isinstance(v, dict):
            if k not in steps:
                c.err(f"{prefix}.{k}", v, f"parameters for a step that is not in {prefix}.steps; add it there or remove the table")
            params[k] = dict(v)
        else:
            c.err(f"{prefix}.{k}", v, "unknown key; a profile has steps, version, outputs, description and one table per step")
    version = t.get("version", "1")
    if not isinstance(version, (str, int)):
        c.err(f"{prefix}.version", version, "a string such as \"1\"")
        version = "1"
    outputs = t.get("outputs", ["seg", "sr"])
    allowed_outputs = {"seg", "sr", "derived"}
    if not isinstance(outputs, list) or any(o not in allowed_outputs for o in outputs):
        c.err(f"{prefix}.outputs", outputs, f"a list drawn from {sorted(allowed_outputs)}")
        outputs = ["seg", "sr"]
    return Profile(name=name, steps=tuple(steps), params=params, version=str(version), outputs=tuple(outputs))


def _extend(base: Profile, t: Mapping[str, Any]) -> dict[str, Any]:
    """The table of a profile that ``extends`` ``base``: the base's keys, then ``t``'s (step tables merged per key).

    ``steps``, ``outputs``, ``version`` and ``description`` given in ``t`` replace the base's; a step table of ``t``
    updates the base's table of that step key by key (``[profiles.mine.detect] max_findings = 3`` keeps every other
    detect parameter of the base). Parameters of base steps that ``t``'s ``steps`` drops are dropped too.
    """
    merged: dict[str, Any] = {"steps": list(base.steps), "outputs": list(base.outputs), "version": base.version}
    steps = t.get("steps", merged["steps"])
    for k, v in base.params.items():
        if isinstance(steps, list) and k in steps:
            merged[k] = dict(v)
    for k, v in t.items():
        if k == "extends":
            continue
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    return merged


def _resolve_profile(c: _Collector, name: str, tables: Mapping[str, Any], shipped: Mapping[str, Profile],
                     done: dict[str, Profile | None], chain: tuple[str, ...] = ()) -> Profile | None:
    """``[profiles.NAME]`` of the file, its ``extends`` resolved (file profiles first, then shipped ones)."""
    if name in done:
        return done[name]
    prefix = f"profiles.{name}"
    t = tables[name]
    if not isinstance(t, dict) or "extends" not in t:
        done[name] = _parse_profile(c, name, t, prefix)
        return done[name]
    base_name = t["extends"]
    if not isinstance(base_name, str):
        c.err(f"{prefix}.extends", base_name, "the name of a profile in quotes, e.g. \"ct\"")
        done[name] = None
        return None
    known = sorted(set(tables) | set(shipped))
    if base_name in chain or (base_name == name and name not in shipped):
        circle = " -> ".join((*chain, name, base_name))
        c.err(f"{prefix}.extends", base_name, f"profiles extend each other in a circle ({circle}); "
              "let one of them extend a shipped profile (ct, mr, pet, generic) instead")
        done[name] = None
        return None
    if base_name == name:  # [profiles.ct] extends = "ct": the shipped one
        base: Profile | None = shipped[name]
    elif base_name in tables:
        base = _resolve_profile(c, base_name, tables, shipped, done, (*chain, name))
        if base is None:
            done[name] = None  # the base's own error is reported; this one follows from it
            return None
    elif base_name in shipped:
        base = shipped[base_name]
    else:
        c.err(f"{prefix}.extends", base_name, f"no such profile; extend one of {', '.join(known)}")
        done[name] = None
        return None
    assert base is not None
    prof = _parse_profile(c, name, _extend(base, t), prefix)
    if prof is not None:
        from dataclasses import replace
        prof = replace(prof, extends=base_name)
    done[name] = prof
    return prof


def load_default_profiles() -> dict[str, Profile]:
    """The shipped profiles from ``conf/profiles/*.toml`` (one profile per file, named by the file stem)."""
    profiles: dict[str, Profile] = {}
    c = _Collector()
    for path in sorted(PROFILES_DIR.glob("*.toml")):
        with path.open("rb") as f:
            doc = tomllib.load(f)
        p = _parse_profile(c, path.stem, doc, f"{path.name}")
        if p is not None:
            profiles[path.stem] = p
    if c.errors:
        raise ConfigErrors(c.errors, str(PROFILES_DIR))
    return profiles


def parse_config(doc: Mapping[str, Any], *, source: str = "<dict>", base_dir: Path | None = None) -> NodeConfig:
    """Validate a parsed TOML document; raise :class:`ConfigErrors` listing every problem."""
    base_dir = base_dir or Path.cwd()
    c = _Collector()
    c.unknown(doc, "", {"node", "peers", "series", "destinations", "rules", "profiles", "workers", "export",
                        "metrics", "retention", "http"})
    node = _parse_node(c, doc, base_dir)

    peers = []
    for i, t in enumerate(_parse_list_of_tables(c, doc, "peers")):
        p = f"peers[{i}]"
        c.unknown(t, p, {"ae_title", "host"})
        ae = c.ae(t, "ae_title", p, required=True)
        host = c.string(t, "host", p, None)
        if ae:
            peers.append(Peer(ae, host or None))

    st = c.table(doc, "series")
    c.unknown(st, "series", {"quiet_seconds", "check_interval_seconds"})
    series = SeriesSection(
        quiet_seconds=float(c.number(st, "quiet_seconds", "series", 30.0, minimum=0.1, example="30")),
        check_interval_seconds=float(c.number(st, "check_interval_seconds", "series", 1.0, minimum=0.05,
                                              example="1")),
    )

    dests: list[Destination] = []
    declared: set[str] = set()  # names of [[destinations]] tables, valid or not: a rule naming one is not at fault
    for i, t in enumerate(_parse_list_of_tables(c, doc, "destinations")):
        p = f"destinations[{i}]"
        c.unknown(t, p, {"name", "ae_title", "host", "port", "tls", "ca_certificates"})
        name = c.string(t, "name", p, required=True)
        if name:
            declared.add(name)
        ae = c.ae(t, "ae_title", p, required=True)
        host = c.string(t, "host", p, required=True)
        port = c.number(t, "port", p, None, minimum=1, maximum=65535, integer=True, example="104")
        if "port" not in t:
            c.err(f"{p}.port", None, "required; the destination's DICOM port, e.g. 104")
        if name and any(d.name == name for d in dests):
            c.err(f"{p}.name", name, "duplicate destination name; names must be unique")
        tls_on = c.boolean(t, "tls", p, False)
        ca = c.string(t, "ca_certificates", p, "") or ""
        if ca and not Path(ca).is_absolute():
            ca = str(base_dir / ca)
        if ca and not Path(ca).is_file():
            c.err(f"{p}.ca_certificates", ca, "no such file; give the path of a PEM file of CA certificates")
        if tls_on:
            for key in ("certificate", "private_key"):
                v = getattr(node.tls, key)
                if v and not Path(v).is_file():
                    c.err(f"node.tls.{key}", v, f"no such file; {p} uses TLS and presents this file")
        if name and ae and host and port:
            dests.append(Destination(name, ae, host, int(port), tls_on, ca))

    profiles = load_default_profiles()
    pt = c.table(doc, "profiles")
    shipped = dict(profiles)
    resolved: dict[str, Profile | None] = {}
    for name in pt:
        prof = _resolve_profile(c, name, pt, shipped, resolved)
        if prof is not None:
            profiles[name] = prof

    rules: list[Rule] = []
    dest_names = {d.name for d in dests}
    for i, t in enumerate(_parse_list_of_tables(c, doc, "rules")):
        p = f"rules[{i}]"
        c.unknown(t, p, {"name", "match", "profile", "destinations", "quiet_seconds", "radiomics", "roi_names"})
        name = c.string(t, "name", p, f"rule{i}") or f"rule{i}"
        m = t.get("match", {})
        match: dict[str, MatchValue] = {}
        if not isinstance(m, dict):
            c.err(f"{p}.match", m, "a table of DICOM keyword = value, list of values or glob, e.g. { Modality = \"CT\" }")
        else:
            from pydicom.datadict import tag_for_keyword
            for kw, val in m.items():
                if tag_for_keyword(kw) is None:
                    c.err(f"{p}.match.{kw}", val, "not a DICOM keyword; use e.g. Modality, BodyPartExamined, SeriesDescription")
                    continue
                if isinstance(val, str):
                    match[kw] = val
                elif isinstance(val, list) and val and all(isinstance(x, (str, int)) for x in val):
                    match[kw] = tuple(str(x) for x in val)
                elif isinstance(val, int) and not isinstance(val, bool):
                    match[kw] = str(val)
                else:
                    c.err(f"{p}.match.{kw}", val, "a string, a glob such as \"CHEST*\", or a list of strings")
        profile = c.string(t, "profile", p, None)
        if profile is not None and profile not in profiles:
            c.err(f"{p}.profile", profile, f"no such profile; define [profiles.{profile}] or use one of {sorted(profiles)}")
        dl = t.get("destinations", [])
        if isinstance(dl, str):
            dl = [dl]
        if not isinstance(dl, list) or any(not isinstance(x, str) for x in dl):
            c.err(f"{p}.destinations", dl, "a list of destination names, e.g. [\"PACS\"]")
            dl = []
        for j, dn in enumerate(dl):
            if dn not in dest_names and dn not in declared:  # an invalid table has its own error already
                hint = f"use one of {sorted(dest_names)}" if dest_names else "add a [[destinations]] table with that name"
                c.err(f"{p}.destinations[{j}]", dn, f"no [[destinations]] named {dn}; {hint}")
        q = t.get("quiet_seconds")
        quiet = None
        if q is not None:
            quiet = float(c.number(t, "quiet_seconds", p, 30.0, minimum=0.1, example="30"))
        radiomics = c.string(t, "radiomics", p, None)
        if radiomics is not None:
            if profile is not None:
                c.err(f"{p}.radiomics", radiomics, "a rule either runs a profile on images or radiomics on regions; "
                      "remove `profile` or split the rule in two")
            from dicomnode.config.radiomics import builtin_settings, resolve_settings
            rpath = radiomics
            if radiomics not in builtin_settings() and not Path(radiomics).is_absolute():
                rpath = str(base_dir / radiomics)
            try:
                resolve_settings(rpath)
                radiomics = rpath
            except ConfigError as e:
                c.err(f"{p}.radiomics", radiomics, f"{e}; use a shipped name ({', '.join(sorted(builtin_settings()))})"
                      f" or the path of a settings TOML")
            except OSError as e:
                c.err(f"{p}.radiomics", radiomics, f"cannot read it ({e.strerror}); use a shipped name "
                      f"({', '.join(sorted(builtin_settings()))}) or the path of a settings TOML")
        roi_names = t.get("roi_names", [])
        if not isinstance(roi_names, list) or any(not isinstance(x, str) for x in roi_names):
            c.err(f"{p}.roi_names", roi_names, "a list of ROI names or globs, e.g. [\"GTV*\"]")
            roi_names = []
        rules.append(Rule(name=name, match=match, profile=profile, destinations=tuple(dl), quiet_seconds=quiet,
                          radiomics=radiomics, roi_names=tuple(roi_names)))

    wt = c.table(doc, "workers")
    c.unknown(wt, "workers", {"count", "backend", "scheduler", "transfer", "max_attempts", "retry_backoff_seconds",
                              "lease_seconds", "memory_limit_mb", "resources", "dashboard_address",
                              "connect_timeout_seconds"})
    wd = WorkersSection()
    backend = c.string(wt, "backend", "workers", wd.backend)
    if backend not in ("local", "dask"):
        c.err("workers.backend", backend, "use \"local\" or \"dask\"")
        backend = wd.backend
    transfer = c.string(wt, "transfer", "workers", wd.transfer)
    if transfer not in ("shared", "bytes"):
        c.err("workers.transfer", transfer, "use \"shared\" or \"bytes\"")
        transfer = wd.transfer
    scheduler = c.string(wt, "scheduler", "workers", "") or ""
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")):
        c.err("workers.scheduler", scheduler, "a Dask scheduler address such as \"tcp://10.0.0.5:8786\", "
              "or leave it out to start a local cluster")
        scheduler = ""
    resources: dict[str, float] = {}
    rt = wt.get("resources", {})
    if not isinstance(rt, dict) or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
                                       for v in rt.values()):
        c.err("workers.resources", rt, "a table of resource name = amount > 0 one job needs, e.g. { MEMORY = 4e9 }"
              " (start the workers with `dask worker --resources \"MEMORY=16e9\"`)")
    else:
        resources = {str(k): float(v) for k, v in rt.items()}
    workers = WorkersSection(
        count=c.number(wt, "count", "workers", wd.count, minimum=1, maximum=256, integer=True, example="2"),
        backend=backend or "local",
        scheduler=scheduler,
        transfer=transfer or "shared",
        max_attempts=c.number(wt, "max_attempts", "workers", wd.max_attempts, minimum=1, integer=True, example="3"),
        retry_backoff_seconds=c.backoff(wt, "retry_backoff_seconds", "workers", wd.retry_backoff_seconds),
        lease_seconds=float(c.number(wt, "lease_seconds", "workers", wd.lease_seconds, minimum=1, example="3600")),
        memory_limit_mb=c.number(wt, "memory_limit_mb", "workers", wd.memory_limit_mb, minimum=0, integer=True,
                                 example="4096 (0: the host's memory / count)"),
        resources=resources,
        dashboard_address=c.string(wt, "dashboard_address", "workers", wd.dashboard_address) or "",
        connect_timeout_seconds=float(c.number(wt, "connect_timeout_seconds", "workers",
                                               wd.connect_timeout_seconds, minimum=0.5, example="10")),
    )

    et = c.table(doc, "export")
    c.unknown(et, "export", {"max_attempts", "retry_backoff_seconds", "timeout_seconds"})
    ed = ExportSection()
    export = ExportSection(
        max_attempts=c.number(et, "max_attempts", "export", ed.max_attempts, minimum=1, integer=True, example="5"),
        retry_backoff_seconds=c.backoff(et, "retry_backoff_seconds", "export", ed.retry_backoff_seconds),
        timeout_seconds=float(c.number(et, "timeout_seconds", "export", ed.timeout_seconds, minimum=1, example="30")),
    )

    mt = c.table(doc, "metrics")
    c.unknown(mt, "metrics", {"port", "bind", "public"})
    md = MetricsSection()
    metrics = MetricsSection(
        port=c.number(mt, "port", "metrics", md.port, minimum=0, maximum=65535, integer=True,
                      example="9108 (0 = no metrics endpoint)"),
        bind=c.string(mt, "bind", "metrics", md.bind) or md.bind,
        public=c.boolean(mt, "public", "metrics", md.public),
    )
    if metrics.port and metrics.port == node.port:
        c.err("metrics.port", metrics.port, "is node.port too; use another port, e.g. 9108")

    rt_ = c.table(doc, "retention")
    c.unknown(rt_, "retention", {"delete_received_after_days", "keep_failed", "check_interval_seconds"})
    rd = RetentionSection()
    retention = RetentionSection(
        delete_received_after_days=float(c.number(rt_, "delete_received_after_days", "retention",
                                                  rd.delete_received_after_days, minimum=0,
                                                  example="30 (0 = keep for ever)")),
        keep_failed=c.boolean(rt_, "keep_failed", "retention", rd.keep_failed),
        check_interval_seconds=float(c.number(rt_, "check_interval_seconds", "retention", rd.check_interval_seconds,
                                              minimum=1, example="3600")),
    )

    http = parse_http(c, doc, base_dir, node=node, metrics=metrics)

    if c.errors:
        raise ConfigErrors(c.errors, source)
    return NodeConfig(node=node, peers=tuple(peers), series=series, destinations=tuple(dests), rules=tuple(rules),
                      profiles=profiles, workers=workers, export=export, metrics=metrics, retention=retention,
                      http=http, source=source, warnings=tuple(shadowed_rules(rules)))


def _is_glob(v: str) -> bool:
    return any(ch in v for ch in "*?[")


def _covers(wide: MatchValue, narrow: MatchValue | None) -> bool:
    """Whether every value ``narrow`` accepts (None: any value) is accepted by ``wide``."""
    pats = wide if isinstance(wide, tuple) else (wide,)
    if narrow is None:
        return "*" in pats
    for v in (narrow if isinstance(narrow, tuple) else (narrow,)):
        if _is_glob(v):
            if not any(p == "*" or p == v for p in pats):
                return False
        elif not any(fnmatch.fnmatchcase(v, p) for p in pats):
            return False
    return True


def shadowed_rules(rules: Sequence[Rule]) -> list[str]:
    """Warnings for rules that can never fire: an earlier rule of the same kind matches every series they match.

    Rules are tried in order and the first match applies, so ``rules[j]`` is dead when some earlier ``rules[i]``
    (both for images, or both radiomics rules) accepts every value ``rules[j]`` accepts, keyword by keyword.
    """
    out = []
    for j, later in enumerate(rules):
        for i, earlier in enumerate(rules[:j]):
            if (earlier.radiomics is None) != (later.radiomics is None):
                continue
            if all(_covers(want, later.match.get(kw)) for kw, want in earlier.match.items()):
                out.append(f"rules[{j}] ({later.name}) never fires: rules[{i}] ({earlier.name}) comes first and "
                           f"matches every series it matches; move rules[{j}] above it or narrow rules[{i}] "
                           f"(`dicomnode rules test FILE` shows which rule a file gets)")
                break
    return out


def load_config(path: Path | str | None = None) -> NodeConfig:
    """Read and validate a config file; ``None`` gives the embedded defaults."""
    if path is None:
        return parse_config({}, source="<defaults>")
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigErrors([ConfigError("--config", str(path), "no such file; give the path of a TOML file")],
                           str(path)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigErrors([ConfigError("(syntax)", str(path), f"not valid TOML: {e}")], str(path)) from None
    return parse_config(doc, source=str(path), base_dir=path.resolve().parent)


# ---------------------------------------------------------------------------------------------------------------
# Command-line overrides and the effective configuration
# ---------------------------------------------------------------------------------------------------------------

def apply_overrides(config: NodeConfig, *, port: int | None = None, ae_title: str | None = None,
                    bind: str | None = None, data_dir: Path | str | None = None,
                    log_format: str | None = None) -> NodeConfig:
    """``config`` with the given ``[node]`` keys replaced (``serve --port/--aet/--bind/--data-dir``), validated.

    Raises :class:`ConfigErrors` naming the option, its value and the fix. A relative ``data_dir`` is taken from
    the working directory, as a path given on a command line is.
    """
    from dataclasses import replace

    c = _Collector()
    changes: dict[str, Any] = {}
    if port is not None:
        if not 0 <= port <= 65535:
            c.err("--port", port, "a TCP port from 1 to 65535, e.g. 11112 (0: any free port)")
        changes["port"] = port
    if ae_title is not None:
        if not _ae_ok(ae_title):
            c.err("--aet", ae_title, "an AE title is 1 to 16 printable characters, no backslash, e.g. DICOMNODE")
        changes["ae_title"] = ae_title.strip()
    if bind is not None:
        if not bind.strip():
            c.err("--bind", bind, "an address of this machine, e.g. 0.0.0.0 (all) or 127.0.0.1")
        changes["bind"] = bind.strip()
    if data_dir is not None:
        changes["data_dir"] = Path(data_dir).expanduser().absolute()
    if log_format is not None:
        if log_format not in ("text", "json"):
            c.err("--log-format", log_format, "use text or json")
        changes["log_format"] = log_format
    if c.errors:
        raise ConfigErrors(c.errors, "command line")
    if not changes:
        return config
    return replace(config, node=replace(config.node, **changes))


#: keys whose values are never printed (``config show``): passwords, tokens and the like
_SECRET = ("password", "passwd", "secret", "token", "credential", "api_key")


def _plain(value: Any) -> Any:
    from dataclasses import fields, is_dataclass

    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def redact(doc: Any) -> Any:
    """``doc`` with the value of every secret-looking key (password, token, secret...) replaced by ``"<redacted>"``."""
    if isinstance(doc, dict):
        return {k: ("<redacted>" if any(s in k.lower() for s in _SECRET) and v not in ("", None)
                    and not isinstance(v, (dict, list)) else redact(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact(v) for v in doc]
    return doc


def effective_config(config: NodeConfig) -> dict[str, Any]:
    """The configuration in force, defaults filled in, as a TOML-shaped document; secrets redacted.

    Tables as in the file: ``node``, ``peers``, ``series``, ``destinations``, ``rules``, ``profiles`` (shipped ones
    included), ``workers``, ``export``, ``metrics``, ``retention``; plus ``source``, the file it came from.
    """
    doc = _plain(config)
    doc.pop("warnings", None)  # what config check says of the file, not a key of it
    for p in doc["peers"]:
        if p.get("host") is None:
            p.pop("host")
    for r in doc["rules"]:
        for k in ("profile", "quiet_seconds", "radiomics"):
            if r.get(k) is None:
                r.pop(k)
    profiles = {}
    for name, prof in doc["profiles"].items():
        t: dict[str, Any] = {"steps": prof["steps"], "version": prof["version"], "outputs": prof["outputs"]}
        if prof.get("extends"):
            t["extends"] = prof["extends"]
        t.update(prof["params"])
        profiles[name] = t
    doc["profiles"] = profiles
    return redact(doc)


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if not (isinstance(v, float) and v != v) else "nan"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def _toml_key(k: str) -> str:
    import json
    import re
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def to_toml(doc: Mapping[str, Any]) -> str:
    """A TOML text of ``doc`` (tables, arrays of tables, scalars; ``None`` values left out)."""
    out: list[str] = []

    def table(t: Mapping[str, Any], path: list[str], array: bool = False) -> None:
        inline = {"match"} if path[:1] == ["rules"] else {"resources"} if path == ["workers"] else set()
        scalars = {k: v for k, v in t.items()
                   if v is not None and not (isinstance(v, Mapping) and v and k not in inline)
                   and not (isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v))}
        if path:
            name = ".".join(_toml_key(p) for p in path)
            out.append(f"\n[[{name}]]" if array else f"\n[{name}]")
        for k, v in scalars.items():
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in t.items():
            if k in scalars or v is None:
                continue
            if isinstance(v, Mapping):
                table(v, [*path, k])
            else:
                for item in v:
                    table(item, [*path, k], array=True)

    table(doc, [])
    return "\n".join(out).lstrip("\n") + "\n"

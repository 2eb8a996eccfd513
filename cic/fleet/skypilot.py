"""SkyPilot as our launcher: the task for one GPU node, built from infra/skypilot/vllm-node.yaml.

``build_task(spec)`` fills the template (envs, resources with ``infra=<cloud>/<cloud region>`` mapped from
our region code) and returns a ``sky.Task`` **without** the secrets, so the task can be printed, logged
and dumped with ``to_yaml_config()`` freely. ``attach_secrets(task, spec)`` adds the bootstrap token and
HF token right before ``sky.launch``; ``render_task_yaml`` redacts them again should they be attached.

SkyPilot 0.14's SDK talks to an API server (started locally on first use, or the one ``sky api login``
points at): ``sky.launch``/``sky.down``/``sky.status`` return a request id, ``sky.get`` waits for the
result and ``sky.stream_and_get`` does the same while streaming the logs. ``sky`` is imported lazily:
the rest of the platform runs without it.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped, unused-ignore]  # (types-PyYAML)

from cic.fleet.launcher import (
    ClusterState,
    FleetConfigError,
    LauncherError,
    LaunchHandle,
    LaunchSpec,
    gpu_count,
)
from cic.models.types import utcnow

if TYPE_CHECKING:
    import sky

log = logging.getLogger(__name__)

TEMPLATE_ENV = "CIC_FLEET_TEMPLATE"
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "skypilot" / "vllm-node.yaml"
REDACTED = "<redacted>"

# Our region codes → the cloud region of each supported cloud (data residency: the same country, or the EU).
CLOUD_REGIONS: dict[str, dict[str, str]] = {
    "aws": {
        "us-east": "us-east-1",  # N. Virginia
        "eu-west": "eu-west-1",  # Ireland
        "ap-singapore": "ap-southeast-1",  # Singapore
        "in-mumbai": "ap-south-1",  # Mumbai
    },
    "gcp": {
        "us-east": "us-east4",  # N. Virginia
        "eu-west": "europe-west1",  # Belgium (GCP has no Irish region; still the EU)
        "ap-singapore": "asia-southeast1",  # Singapore
        "in-mumbai": "asia-south1",  # Mumbai
    },
    "azure": {
        "us-east": "eastus",  # Virginia
        "eu-west": "northeurope",  # Ireland
        "ap-singapore": "southeastasia",  # Singapore
        "in-mumbai": "centralindia",  # Pune
    },
}


@dataclass(frozen=True)
class RegionMap:
    """Our region code → SkyPilot ``infra`` (``<cloud>/<region>[/<zone>]``), one cloud per region.

    ``RegionMap.for_cloud("gcp")`` takes a cloud's table; ``overrides`` (or ``CIC_FLEET_REGIONS`` in
    ``from_env``, ``us-east=gcp/us-east4,eu-west=aws/eu-west-1``) move single regions elsewhere.
    """

    infra_by_region: Mapping[str, str] = field(default_factory=lambda: RegionMap.table("aws"))

    @staticmethod
    def table(cloud: str) -> dict[str, str]:
        try:
            regions = CLOUD_REGIONS[cloud]
        except KeyError:
            known = ", ".join(sorted(CLOUD_REGIONS))
            raise FleetConfigError(f"No region table for cloud '{cloud}' (known: {known}).", param="cloud") from None
        return {code: f"{cloud}/{region}" for code, region in regions.items()}

    @classmethod
    def for_cloud(cls, cloud: str = "aws", overrides: Mapping[str, str] | None = None) -> RegionMap:
        mapping = cls.table(cloud)
        for code, infra in (overrides or {}).items():
            if not infra.strip("/") or "/" not in infra:
                raise FleetConfigError(f"'{infra}' for region '{code}' is not <cloud>/<region>.", param="regions")
            mapping[code] = infra.strip("/")
        return cls(mapping)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegionMap:
        """``CIC_FLEET_CLOUD`` (default aws) and ``CIC_FLEET_REGIONS`` (``code=cloud/region,…``)."""
        env = os.environ if environ is None else environ
        overrides: dict[str, str] = {}
        for item in env.get("CIC_FLEET_REGIONS", "").split(","):
            if item.strip():
                code, sep, infra = item.partition("=")
                if not sep:
                    raise FleetConfigError(f"CIC_FLEET_REGIONS: '{item}' is not code=cloud/region.", param="regions")
                overrides[code.strip()] = infra.strip()
        return cls.for_cloud(env.get("CIC_FLEET_CLOUD", "aws") or "aws", overrides)

    def infra(self, region: str) -> str:
        try:
            return self.infra_by_region[region]
        except KeyError:
            known = ", ".join(sorted(self.infra_by_region))
            raise FleetConfigError(
                f"No cloud region for region '{region}' (mapped: {known}).", param="region", code="unknown_region"
            ) from None

    def cloud(self, region: str) -> str:
        return self.infra(region).split("/", 1)[0]


def template_path(path: str | Path | None = None) -> Path:
    """The explicit path, else ``CIC_FLEET_TEMPLATE``, else infra/skypilot/vllm-node.yaml of this checkout."""
    chosen = Path(path or os.environ.get(TEMPLATE_ENV) or DEFAULT_TEMPLATE)
    if not chosen.is_file():
        raise FleetConfigError(f"SkyPilot template '{chosen}' not found (set {TEMPLATE_ENV}).", param="template")
    return chosen


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    with template_path(path).open(encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise FleetConfigError(f"SkyPilot template '{path}' is not a mapping.", param="template")
    return config


def task_config(
    spec: LaunchSpec, template: Mapping[str, Any], regions: RegionMap | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The template filled for ``spec``, as a SkyPilot YAML dict without secrets, and the secret names it declares.

    Pure (no ``sky``): the part of ``build_task`` worth reading in a test.
    """
    regions = regions or RegionMap()
    config = copy.deepcopy(dict(template))
    declared = config.pop("secrets", None) or {}
    secret_names = list(declared) if isinstance(declared, dict) else [str(s).removeprefix("secrets:") for s in declared]
    envs: dict[str, Any] = dict(config.get("envs") or {})
    envs.update(
        {
            "VLLM_VERSION": spec.vllm_version,
            "MODEL": spec.hf_repo,
            "SERVED_MODEL_NAME": spec.model_id,
            "CIC_REGION": spec.region,
            "CIC_CONTROL_PLANE": spec.control_plane_url.rstrip("/"),
            "CIC_PROVIDER": regions.cloud(spec.region),
            "CIC_GPU": spec.accelerators,
            "CIC_SPOT": "true" if spec.spot else "false",
            "CIC_LAUNCH_ID": spec.launch_id or "",
            "MAX_MODEL_LEN": str(spec.max_model_len) if spec.max_model_len else "",
            "TENSOR_PARALLEL_SIZE": str(gpu_count(spec.accelerators)),
        }
    )
    if spec.package_spec:
        envs["CIC_PACKAGE_SPEC"] = spec.package_spec
    clash = set(spec.extra_envs) & set(secret_names)
    if clash:
        raise FleetConfigError(f"extra_envs may not set secrets: {', '.join(sorted(clash))}.", param="extra_envs")
    envs.update(spec.extra_envs)
    unset = sorted(k for k, v in envs.items() if v is None)
    if unset:
        raise FleetConfigError(f"The template needs values for: {', '.join(unset)}.", param="template")
    if not spec.hf_repo:
        raise FleetConfigError(f"Model '{spec.model_id}' has no weights (hf_repo) to serve.", param="model")
    config["envs"] = {k: str(v) for k, v in envs.items()}
    resources: dict[str, Any] = dict(config.get("resources") or {})
    resources.update(accelerators=spec.accelerators, use_spot=spec.spot, infra=regions.infra(spec.region))
    for key in ("cloud", "region", "zone"):  # superseded by infra
        resources.pop(key, None)
    if spec.disk_size_gb:
        resources["disk_size"] = spec.disk_size_gb
    config["resources"] = resources
    return config, secret_names


def build_task(
    spec: LaunchSpec, template_path: str | Path | None = None, *, regions: RegionMap | None = None
) -> sky.Task:
    """The SkyPilot task for ``spec``, without secrets (see ``attach_secrets``)."""
    import sky

    config, _ = task_config(spec, load_template(template_path), regions)
    resources = config.pop("resources")
    try:
        task = sky.Task.from_yaml_config(config)
        task.set_resources(sky.Resources(**_resources_kwargs(resources)))
    except (ValueError, TypeError) as exc:  # SkyPilot's schema and value checks
        raise FleetConfigError(f"Invalid SkyPilot task: {exc}", param="template") from exc
    return task


def attach_secrets(task: sky.Task, spec: LaunchSpec) -> sky.Task:
    """Add the bootstrap token (and HF token) as SkyPilot secrets: env vars on the node, redacted in logs."""
    return task.update_secrets(spec.secrets())


def render_task_yaml(task: sky.Task) -> str:
    """The task as YAML for people (``--dry-run``): secret values replaced by ``<redacted>``."""
    config = task.to_yaml_config()
    config.pop("_user_specified_yaml", None)  # the raw input again, and a place secrets could hide
    raw = config.get("secrets")
    if isinstance(raw, dict):
        config["secrets"] = {k: (REDACTED if v not in (None, "") else v) for k, v in raw.items()}
    text = yaml.dump(config, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False)
    for value in task.secrets.values():  # belt and braces: no secret value anywhere in the text
        plain = value.get_secret_value()
        if plain:
            text = text.replace(plain, REDACTED)
    return text


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (setup, run) as ``|`` blocks, as they are written in the template."""


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_block)


def _resources_kwargs(resources: Mapping[str, Any]) -> dict[str, Any]:
    """YAML ``resources`` keys → ``sky.Resources(...)`` keyword arguments (same names for what we use)."""
    allowed = {
        "infra",
        "accelerators",
        "use_spot",
        "disk_size",
        "disk_tier",
        "ports",
        "cpus",
        "memory",
        "instance_type",
        "image_id",
        "labels",
        "network_tier",
    }
    unknown = sorted(set(resources) - allowed)
    if unknown:
        raise FleetConfigError(f"Unsupported resources keys in the template: {', '.join(unknown)}.", param="template")
    return dict(resources)


_SKY_STATES = {"INIT": ClusterState.launching, "UP": ClusterState.running, "STOPPED": ClusterState.stopped}


class SkyPilotLauncher:
    """``Launcher`` over SkyPilot's SDK.

    ``launch`` submits the launch and returns at once (the request runs on SkyPilot's API server); the
    reconciler follows the cluster with ``status``. ``wait`` streams a launch to the end (for the CLI).
    Clusters are launched with autodown: a cluster whose agent has exited goes away by itself after
    ``autodown_idle_minutes`` even if the control plane is not there to tear it down. The reconciler and
    ``cic nodes launch`` must use the same API server (``sky api login``), or each sees only its own
    clusters.
    """

    def __init__(
        self,
        template_path: str | Path | None = None,
        regions: RegionMap | None = None,
        *,
        autodown_idle_minutes: int | None = 10,
        retry_until_up: bool = False,
        refresh: str = "AUTO",
        sdk: Any = None,
    ) -> None:
        self.template_path = template_path
        self.regions = regions or RegionMap()
        self.autodown_idle_minutes = autodown_idle_minutes
        self.retry_until_up = retry_until_up
        self.refresh = refresh  # NONE | AUTO (refresh spot and autostop clusters) | FORCE
        self._sdk = sdk

    @property
    def sdk(self) -> Any:
        """The ``sky`` module (imported on first use), or the stand-in given to the constructor."""
        if self._sdk is None:
            import sky

            self._sdk = sky
        return self._sdk

    def build(self, spec: LaunchSpec) -> sky.Task:
        return build_task(spec, self.template_path, regions=self.regions)

    def launch(self, spec: LaunchSpec) -> LaunchHandle:
        task = attach_secrets(self.build(spec), spec)
        log.info(
            "launching cluster",
            extra={
                "cluster": spec.cluster_name,
                "model": spec.model_id,
                "region": spec.region,
                "infra": self.regions.infra(spec.region),
                "accelerators": spec.accelerators,
                "spot": spec.spot,
                "launch_id": spec.launch_id,
            },
        )
        try:
            request_id = self.sdk.launch(
                task,
                cluster_name=spec.cluster_name,
                retry_until_up=self.retry_until_up,
                idle_minutes_to_autostop=self.autodown_idle_minutes,
                down=self.autodown_idle_minutes is not None,
            )
        except Exception as exc:  # SkyPilot raises many kinds; all become ours here
            raise LauncherError(f"SkyPilot launch of '{spec.cluster_name}' failed: {_first_line(exc)}") from exc
        return LaunchHandle(spec.cluster_name, str(request_id), utcnow())

    def wait(self, handle: LaunchHandle) -> None:
        """Stream the launch's logs until it is up (or has failed, which raises LauncherError)."""
        if handle.request_id is None:
            return
        try:
            self.sdk.stream_and_get(handle.request_id)
        except Exception as exc:
            raise LauncherError(f"SkyPilot launch of '{handle.cluster_name}' failed: {_first_line(exc)}") from exc

    def down(self, cluster_name: str) -> None:
        log.info("tearing down cluster", extra={"cluster": cluster_name})
        try:
            self.sdk.get(self.sdk.down(cluster_name))
        except Exception as exc:
            from sky.exceptions import ClusterDoesNotExist

            if isinstance(exc, ClusterDoesNotExist):
                return
            raise LauncherError(f"SkyPilot down of '{cluster_name}' failed: {_first_line(exc)}") from exc

    def status(self, cluster_names: Iterable[str]) -> dict[str, ClusterState]:
        names = list(dict.fromkeys(cluster_names))
        if not names:
            return {}
        sky = self.sdk
        try:
            refresh = sky.StatusRefreshMode[self.refresh]
            records = sky.get(sky.status(cluster_names=names, refresh=refresh))
        except Exception as exc:
            raise LauncherError(f"SkyPilot status failed: {_first_line(exc)}") from exc
        out = dict.fromkeys(names, ClusterState.missing)
        for record in records:
            name = _field(record, "name")
            if name in out:
                out[name] = _cluster_state(record)
        return out


def _cluster_state(record: Any) -> ClusterState:
    status = _field(record, "status")
    value = str(getattr(status, "value", status))
    state = _SKY_STATES.get(value, ClusterState.unhealthy)
    if state is ClusterState.launching and (
        _field(record, "init_kind") == "unhealthy"
        or (_field(record, "cluster_ever_up") and _field(record, "init_kind") != "launching")
    ):
        return ClusterState.unhealthy
    return state


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):
        return record.get(name)
    return getattr(record, name, None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]

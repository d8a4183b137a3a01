"""Usage and quotas in Prometheus' text exposition format (version 0.0.4).

Written here rather than with ``prometheus_client``: the values are computed from the ledger and
the quota tables at scrape time, not kept in process-wide registries, so the library would be
used only for its ~30 lines of formatting (through a custom collector), at the price of a
dependency and of its global default registry in hyperd. The format is small and stable:
``# HELP``, ``# TYPE``, then ``name{label="value"} number`` lines, label values escaped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from hyper.tenancy.metering import Amounts
from hyper.tenancy.quotas import UNLIMITED, QuotaLine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_USAGE = (
    ("vcpu_seconds", "hyper_usage_vcpu_seconds_total", "vCPU-seconds consumed by running pods"),
    (
        "memory_gib_seconds",
        "hyper_usage_memory_gib_seconds_total",
        "GiB-seconds of memory held by running pods",
    ),
    (
        "volume_gib_seconds",
        "hyper_usage_volume_gib_seconds_total",
        "GiB-seconds of volume capacity held",
    ),
    ("fip_seconds", "hyper_usage_fip_seconds_total", "Seconds of floating IPs held"),
)


def render(usage: Mapping[str, Amounts], quotas: Mapping[str, Iterable[QuotaLine]]) -> str:
    """The exposition of ``usage`` (per tenant, since the ledger began: counters) and
    ``quotas`` (per tenant: limit and usage gauges; an unlimited resource has no limit line)."""
    lines: list[str] = []
    for attribute, metric, help_text in _USAGE:
        lines += [f"# HELP {metric} {help_text}.", f"# TYPE {metric} counter"]
        for tenant in sorted(usage):
            value = getattr(usage[tenant], attribute)
            lines.append(f"{metric}{_labels(tenant=tenant)} {_number(value)}")
    limit_lines, used_lines = [], []
    for tenant in sorted(quotas):
        for line in quotas[tenant]:
            labels = _labels(tenant=tenant, resource=line.resource)
            if line.limit != UNLIMITED:
                limit_lines.append(f"hyper_quota_limit{labels} {line.limit}")
            used_lines.append(f"hyper_quota_used{labels} {line.used}")
    lines += ["# HELP hyper_quota_limit Most of a resource a tenant may hold.",
              "# TYPE hyper_quota_limit gauge", *limit_lines,
              "# HELP hyper_quota_used Amount of a resource a tenant holds.",
              "# TYPE hyper_quota_used gauge", *used_lines]  # fmt: skip
    return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))

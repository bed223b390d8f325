"""The Helm chart this client embeds: the traffic-manager of the client's own version.

A wheel carries the chart as ``telepresence/_chart/telepresence-oss`` (``pyproject.toml``'s
``force-include``); a source checkout (an editable install, the tests) has it at
``helm/telepresence-oss`` beside the package. The packaged copy is looked for first, so an
installed client never picks up some other checkout's chart; an editable install has no
packaged copy next to its sources and uses the checkout's, which is the one being edited.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import telepresence
from telepresence.helm.errors import ChartNotFound
from telepresence.helm.values import coalesce

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CHART_NAME", "Chart", "embedded_chart"]

CHART_NAME = "telepresence-oss"
_PACKAGE = Path(telepresence.__file__).resolve().parent
#: Where the chart may be, in order: packaged in the wheel, then in a source checkout.
CANDIDATES = (_PACKAGE / "_chart" / CHART_NAME, _PACKAGE.parent / "helm" / CHART_NAME)


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart directory and what its ``Chart.yaml`` says."""

    path: Path
    name: str
    version: str
    app_version: str

    def default_values(self) -> dict[str, Any]:
        """The chart's ``values.yaml``."""
        loaded = yaml.safe_load((self.path / "values.yaml").read_text())
        return loaded if isinstance(loaded, dict) else {}

    @contextlib.contextmanager
    def with_defaults(self, values: dict[str, Any]) -> Iterator[Chart]:
        """A temporary copy of the chart whose ``values.yaml`` is ``values`` over the chart's
        own, as Helm would render them: helm-sdkpy's lint takes no values, only a chart."""
        with tempfile.TemporaryDirectory(prefix="telepresence-chart-") as directory:
            copy = Path(directory) / self.path.name
            shutil.copytree(self.path, copy)
            merged = coalesce(values, self.default_values())
            (copy / "values.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
            yield Chart(copy, self.name, self.version, self.app_version)


def embedded_chart(candidates: tuple[Path, ...] = CANDIDATES) -> Chart:
    """The embedded chart.

    Raises:
        ChartNotFound: None of the candidate directories holds a chart.
    """
    for path in candidates:
        metadata_file = path / "Chart.yaml"
        if metadata_file.is_file():
            metadata = yaml.safe_load(metadata_file.read_text()) or {}
            return Chart(
                path,
                str(metadata.get("name", CHART_NAME)),
                str(metadata.get("version", "")),
                str(metadata.get("appVersion", "")),
            )
    looked = " or ".join(str(path) for path in candidates)
    raise ChartNotFound(
        f"this telepresence installation has no embedded Helm chart (looked in {looked}); "
        "reinstall telepresence"
    )

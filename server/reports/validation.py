"""Validation of a report upload's metadata against the contract and the
project configuration.  Every refusal names the field and the rule."""

from __future__ import annotations

from collections.abc import Mapping

from dqrxfer import contract

from ..config import Settings


def validate_for_settings(
    metadata: Mapping[str, str | None], settings: Settings
) -> contract.ReportUpload:
    """Validate against the contract, then the chosen project's own sites."""
    target = contract.validate_metadata(metadata, settings.projects, settings.sites)
    project = settings.projects[target.project]
    if target.site not in project.sites:
        raise contract.ContractError(
            contract.KEY_UPLOADER,
            f"project {project.name} accepts sites {', '.join(project.sites)}",
            target.site,
        )
    return target

"""Authorization at upload creation, in front of the application's tus hooks.

:class:`AuthorizingHooks` wraps the application's hooks: its ``pre_create``
asks the :class:`~.rules.Policy` whether the upload's principal may upload to
the project as the site, and refuses with 403 (naming the rule) before the
application sees the upload: every upload, partial uploads of the
concatenation extension included (they carry their final upload's report
metadata).  Every other hook passes through unchanged.

:func:`authorizing` puts it in front of the application's hooks when the
configured mode authenticates anyone (mode ``none`` authorizes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from dqrxfer import contract

from ..tus import HookRejection, TusHooks, UploadInfo
from .rules import AuthorizationError, Policy
from .settings import AuthSettings


def authorizing(
    hooks: TusHooks, settings: AuthSettings, projects: Sequence[str], sites: Sequence[str]
) -> TusHooks:
    """``hooks`` with authorization in front of ``pre_create`` (unless the
    mode is ``none``: then nobody is authenticated and nothing is checked)."""
    if settings.mode == "none":
        return hooks
    return AuthorizingHooks(hooks, Policy(settings.rules), projects, sites)


class AuthorizingHooks(TusHooks):
    def __init__(
        self, inner: TusHooks, policy: Policy, projects: Sequence[str], sites: Sequence[str]
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.projects = tuple(projects)
        self.sites = tuple(sites)
        self.publishes_finished_uploads = inner.publishes_finished_uploads

    def pre_create(self, info: UploadInfo) -> None:
        # Every upload names its target, partial uploads of a concatenation
        # included (the inner hooks refuse one that does not).
        target = self._target(info.metadata)
        if target is None:
            self.inner.pre_create(info)  # refuses the unreadable target with a 400
            raise HookRejection(403, "cannot authorize: project or uploader not understood")
        try:
            self.policy.authorize(info.owner, *target)
        except AuthorizationError as error:
            raise HookRejection(403, str(error)) from None
        self.inner.pre_create(info)

    def _target(self, metadata: dict[str, str]) -> tuple[str, str] | None:
        try:
            project = contract.validate_project(metadata[contract.KEY_PROJECT], self.projects)
            site = contract.validate_site(metadata[contract.KEY_UPLOADER], self.sites)
        except (KeyError, contract.ContractError):
            return None
        return project, site

    # -- the other hooks are the application's own ----------------------------

    def post_create(self, info: UploadInfo) -> None:
        self.inner.post_create(info)

    def post_receive(self, info: UploadInfo, received: int) -> None:
        self.inner.post_receive(info, received)

    def post_finish(self, info: UploadInfo) -> dict[str, str]:
        return self.inner.post_finish(info)

    def post_terminate(self, info: UploadInfo) -> None:
        self.inner.post_terminate(info)

    def post_expire(self, info: UploadInfo) -> None:
        self.inner.post_expire(info)

"""The one use case "plan a change": what ``plan``, a merge request's review, the demo
and the benchmarks all show.

A loaded wishlist (or the problems that kept it from loading), the wishlist
before the change, the publisher's current state and a way to resolve wishes
go in; the :class:`~bot.core.plan.Plan` people see comes out (errors that
``ignoreErrors`` covers shown as warnings). Two views:

* the **change** (``whole=False``, a merge request, ``plan --base``): only the
  wishes the change adds or alters are resolved; images of removed wishes are
  removed unless another wish still covers them;
* the **whole** wishlist (``whole=True``, what ``apply`` would do now): every
  wish is resolved.

The I/O is the caller's: ``resolve`` talks to the registries (with whatever
credentials the caller trusts the change with) and ``current`` reads the
publisher's tree or a catalog. The rest is :func:`bot.core.plan.make_plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.core.model import CurrentState, Problem, Resolution, Wish, Wishlist
from bot.core.plan import Plan, ignoring_errors, make_plan
from bot.core.recipe import diff_wishlists

#: wishes -> their resolutions (the registry client's ``resolve_all``)
Resolver = Callable[[Sequence[Wish]], list[Resolution]]
#: the wishlist's ``cvmfs_repo`` -> what the publisher serves now
StateReader = Callable[[str], CurrentState]


@dataclass(frozen=True)
class PlannedChange:
    plan: Plan
    #: the wishes that were resolved (the new and changed ones, or all of them)
    resolved: tuple[Wish, ...] = ()
    resolutions: tuple[Resolution, ...] = ()

    @property
    def registry_problems(self) -> list[Problem]:
        return [r.problem for r in self.resolutions if r.problem is not None]


def plan_change(
    wishlist: Wishlist | None,
    problems: Sequence[Problem],
    *,
    current: StateReader,
    resolve: Resolver,
    now: datetime,
    grace_days: int,
    base: Wishlist | None = None,
    whole: bool = False,
) -> PlannedChange:
    """The plan of ``wishlist`` (loaded with ``problems``) against ``current``.

    ``wishlist`` None (it did not load): nothing is planned, the plan shows
    why, and nothing is read or resolved — never plan removals from a broken
    file. ``base`` None in the change view (no or an unreadable wishlist
    before): every wish counts as new, nothing counts as removed.
    """
    if wishlist is None:
        plan = make_plan(
            [], [], CurrentState(""), now, cvmfs_repo="", removed=[], problems=problems
        )
        return PlannedChange(plan)
    state = current(wishlist.cvmfs_repo)
    diff = None if whole else diff_wishlists(base, wishlist)
    wanted = wishlist.wishes if diff is None else diff.added
    resolutions = resolve(wanted) if wanted else []
    plan = make_plan(
        wishlist.wishes,
        resolutions,
        state,
        now,
        grace_days=grace_days,
        cvmfs_repo=wishlist.cvmfs_repo,
        removed=None if diff is None else diff.removed,
        problems=problems,
    )
    # the plan as people see it: the comment agrees with the statuses
    return PlannedChange(ignoring_errors(plan, wishlist), tuple(wanted), tuple(resolutions))

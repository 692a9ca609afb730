"""A loopback fake of the GitLab v4 REST endpoints wishbot's GitLab adapter uses.

Stateful: one project with an in-memory git, merge requests, notes, commit
statuses and the commits API, and one fork of it (merge requests from the
fork). Responses carry the fields the GitLab API documentation lists (and
python-gitlab reads); where GitLab answers unkindly, the fake does too, and
says where that is written:

- commit statuses follow ``Ci::CreateCommitStatusService`` (gitlabhq
  app/services/ci/create_commit_status_service.rb; API page "Commits API",
  "Set the pipeline status of a commit"): without ``ref`` the ref is the
  ``pipeline_id``'s, else the newest pipeline's for the sha, else the first
  *branch of this project* containing the commit, else 404 "References for
  commit Not Found" — the answer for a fork's commit, whose branch lives in
  the fork (gitlab-org/gitlab#374133: statuses of fork merge requests go to
  the fork, or to a pipeline of the parent project). A status still pending or
  running is updated in place: ``pending`` again is 400 "Cannot transition
  status via :enqueue from :pending", ``running`` again 400 "... :run from
  :running"; a finished one is never reused, so repeating it makes a new job:
  201.
- members (docs "Group and project members API", Get a member of a group or
  project, including inherited and invited members: ``GET
  /projects/:id/members/all/:user_id``): a member's ``access_level``; a
  non-member is 404 "404 Not found".
- emoji reactions (docs "Emoji reactions API", Add a new emoji reaction to a
  comment: ``POST .../merge_requests/:iid/notes/:note_id/award_emoji``): 201;
  the same emoji twice by the same user is refused, 404 "404 Award Emoji Name
  has already been taken Not Found" (a unique key per user, name and note).
- issues (docs "Issues API": list ``author_username``/``state`` filters,
  create, edit ``description``); descriptions over 1,048,576 characters are
  refused, 400 "description is too long (maximum is 1048576 characters)".
- protected branches (docs "Protected branches": the default branch is
  protected when a project is created, push allowed to Maintainers): a commit
  to one by a lower role is refused, 403 "You are not allowed to push into this
  branch".
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from fake_http import JsonServer, MemoryRepo, Reply, Request

PROJECT_ID = 42
FORK_ID = 77
FORK_PATH = "mallory/wishlist"
ROLES = {"guest": 10, "reporter": 20, "developer": 30, "maintainer": 40, "owner": 50}


@dataclass
class FakeMergeRequest:
    iid: int
    title: str
    source_branch: str
    target_branch: str
    head_ref: str  # branch in the fake's repository holding the head
    from_fork: bool = False
    draft: bool = False
    state: str = "opened"
    merge_commit_sha: str | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    head_pipeline: dict[str, Any] | None = None


class FakeGitLab(JsonServer):
    def __init__(self, project: str = "group/wishlist", token: str = "glpat-secret-token"):
        super().__init__()
        self.project = project
        self.token = token
        self.repo = MemoryRepo()
        self.default_branch = "main"
        self.mrs: dict[int, FakeMergeRequest] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.note_ids = 1000
        self.bot_username = "wishbot"
        # "Protected branches": the default branch is protected on creation;
        # the token's role in the project decides whether it may push there
        self.protected_branches: set[str] = {self.default_branch}
        self.role = "maintainer"
        # the token's role in the fork (None: it cannot see the fork at all)
        self.fork_role: str | None = None
        self.pipelines: list[dict[str, Any]] = []
        self.users: dict[str, int] = {"wishbot": 3, "alice": 7, "mallory": 8, "dev": 9}
        # user id -> access level in the project (members/all: inherited ones too)
        self.members: dict[int, int] = {3: ROLES["maintainer"], 9: ROLES["developer"]}
        self.issues: dict[int, dict[str, Any]] = {}
        self.route("GET", r"/api/v4/user", self.get_user)
        self.route("GET", r"/api/v4/users", self.list_users)
        p = r"/api/v4/projects/(?P<project>[^/]+)"
        self.route("GET", p, self.get_project)
        self.route("GET", p + r"/repository/files/(?P<path>[^/]+)", self.get_file)
        self.route("GET", p + r"/repository/branches/(?P<branch>[^/]+)", self.get_branch)
        self.route("GET", p + r"/repository/merge_base", self.get_merge_base)
        self.route("GET", p + r"/merge_requests", self.list_mrs)
        self.route("GET", p + r"/merge_requests/(?P<iid>\d+)", self.get_mr)
        self.route("GET", p + r"/merge_requests/(?P<iid>\d+)/notes", self.list_notes)
        self.route("POST", p + r"/merge_requests/(?P<iid>\d+)/notes", self.create_note)
        self.route("PUT", p + r"/merge_requests/(?P<iid>\d+)/notes/(?P<note>\d+)", self.edit_note)
        self.route("GET", p + r"/repository/commits/(?P<sha>\w+)/merge_requests", self.commit_mrs)
        self.route("POST", p + r"/statuses/(?P<sha>\w+)", self.create_status)
        self.route("GET", p + r"/members/all/(?P<user>\d+)", self.get_member)
        note = p + r"/merge_requests/(?P<iid>\d+)/notes/(?P<note>\d+)"
        self.route("POST", note + r"/award_emoji", self.award_emoji)
        self.route("GET", p + r"/issues", self.list_issues)
        self.route("POST", p + r"/issues", self.create_issue)
        self.route("PUT", p + r"/issues/(?P<issue>\d+)", self.edit_issue)
        self.route("POST", p + r"/repository/commits", self.create_commit)
        self.route("POST", p + r"/repository/branches", self.create_branch)

    # --- test helpers ----------------------------------------------------------

    @property
    def url(self) -> str:
        return self.base

    def open_mr(
        self, branch: str, title: str = "change", *, fork: bool = False, draft: bool = False
    ) -> FakeMergeRequest:
        iid = len(self.mrs) + 1
        mr = FakeMergeRequest(iid, title, branch, self.default_branch, branch, fork, draft)
        self.mrs[iid] = mr
        return mr

    def run_pipeline(self, sha: str, ref: str, *, project_id: int = PROJECT_ID) -> int:
        """A CI pipeline (what GitLab makes on a push or for a merge request)."""
        pipeline_id = 900 + len(self.pipelines)
        pipeline: dict[str, Any] = {
            "id": pipeline_id,
            "project_id": project_id,
            "sha": sha,
            "ref": ref,
            "status": "running",
            "source": "merge_request_event" if ref.startswith("refs/merge-requests/") else "push",
        }
        self.pipelines.append(pipeline)
        return pipeline_id

    def run_parent_mr_pipeline(self, iid: int) -> int:
        """'Run pipelines in the parent project for merge requests from a forked
        project' (docs: ci/pipelines/merge_request_pipelines.md): its ref is
        refs/merge-requests/<iid>/head and it becomes the MR's head_pipeline."""
        mr = self.mrs[iid]
        sha = self.repo.branches[mr.head_ref]
        pid = self.run_pipeline(sha, f"refs/merge-requests/{iid}/head")
        mr.head_pipeline = self.pipelines[-1]
        return pid

    def merge(self, iid: int) -> str:
        mr = self.mrs[iid]
        sha = self.repo.merge(mr.head_ref, mr.target_branch, f"Merge branch '{mr.source_branch}'")
        mr.state = "merged"
        mr.merge_commit_sha = sha
        return sha

    def human_note(self, iid: int, body: str, username: str = "mallory") -> dict[str, Any]:
        self.note_ids += 1
        note = {
            "id": self.note_ids,
            "body": body,
            "system": False,
            "author": {
                "id": self.users.setdefault(username, 100 + len(self.users)),
                "username": username,
            },
            "award_emoji": [],
        }
        self.mrs[iid].notes.append(note)
        return note

    def human_issue_edit(self, iid: int, description: str) -> None:
        """A person edits the issue (ticks a box)."""
        self.issues[iid]["description"] = description

    def status_of(self, sha: str, name: str) -> dict[str, Any] | None:
        found = [s for s in self.statuses.get(sha, []) if s["name"] == name]
        return found[-1] if found else None

    # --- plumbing ----------------------------------------------------------------

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("private-token") == self.token

    def _project_ok(self, request: Request) -> bool:
        ident = unquote(request.match["project"])
        return ident in (self.project, str(PROJECT_ID))

    def _project_id(self, request: Request) -> int | None:
        """The project a request names (the parent, or the fork if the token sees it)."""
        ident = unquote(request.match["project"])
        if ident in (self.project, str(PROJECT_ID)):
            return PROJECT_ID
        if ident in (FORK_PATH, str(FORK_ID)) and self.fork_role is not None:
            return FORK_ID
        return None

    def _branches_of(self, project_id: int) -> dict[str, str]:
        """A project's branches: the fork's merge-request branches live in the fork only."""
        fork_heads = {mr.head_ref for mr in self.mrs.values() if mr.from_fork}
        if project_id == FORK_ID:
            return {b: s for b, s in self.repo.branches.items() if b in fork_heads or b == "main"}
        return {b: s for b, s in self.repo.branches.items() if b not in fork_heads}

    def _role(self, project_id: int) -> int:
        role = self.role if project_id == PROJECT_ID else (self.fork_role or "guest")
        return ROLES[role]

    def _mr_json(self, mr: FakeMergeRequest) -> dict[str, Any]:
        head = self.repo.branches[mr.head_ref]
        target = self.repo.branches[mr.target_branch]
        base = self.repo.merge_base(target, head)
        return {
            "id": 1000 + mr.iid,
            "iid": mr.iid,
            "project_id": PROJECT_ID,
            "title": mr.title,
            "state": mr.state,
            "draft": mr.draft,
            "work_in_progress": mr.draft,
            "source_branch": mr.source_branch,
            "target_branch": mr.target_branch,
            "source_project_id": FORK_ID if mr.from_fork else PROJECT_ID,
            "target_project_id": PROJECT_ID,
            "head_pipeline": mr.head_pipeline,
            "sha": head,
            "merge_commit_sha": mr.merge_commit_sha,
            "squash_commit_sha": None,
            "diff_refs": {"base_sha": base, "head_sha": head, "start_sha": target},
            "web_url": f"{self.base}/{self.project}/-/merge_requests/{mr.iid}",
            "author": {"id": 7, "username": "alice", "name": "Alice"},
        }

    def _mr_summary(self, mr: FakeMergeRequest) -> dict[str, Any]:
        """List endpoints do not carry diff_refs (only the single-MR endpoint does)."""
        data = self._mr_json(mr)
        del data["diff_refs"], data["head_pipeline"]
        return data

    def _mr(self, request: Request) -> FakeMergeRequest | None:
        return self.mrs.get(int(request.match["iid"])) if self._project_ok(request) else None

    # --- endpoints ---------------------------------------------------------------

    def get_user(self, request: Request) -> Reply:
        return 200, {"id": 3, "username": self.bot_username, "name": "wishbot", "state": "active"}

    def get_project(self, request: Request) -> Reply:
        if not self._project_ok(request):
            return 404, {"message": "404 Project Not Found"}
        return 200, {
            "id": PROJECT_ID,
            "path_with_namespace": self.project,
            "default_branch": self.default_branch,
            "web_url": f"{self.base}/{self.project}",
        }

    def get_file(self, request: Request) -> Reply:
        path = unquote(request.match["path"])
        ref = request.arg("ref")
        content = self.repo.file_at(ref, path) if self._project_ok(request) else None
        if content is None:
            return 404, {"message": "404 File Not Found"}
        return 200, {
            "file_name": path.rsplit("/", 1)[-1],
            "file_path": path,
            "size": len(content),
            "encoding": "base64",
            "content": base64.b64encode(content).decode(),
            "ref": ref,
            "commit_id": self.repo.resolve(ref),
        }

    def get_branch(self, request: Request) -> Reply:
        name = unquote(request.match["branch"])
        if name not in self.repo.branches:
            return 404, {"message": "404 Branch Not Found"}
        sha = self.repo.branches[name]
        return 200, {"name": name, "commit": {"id": sha, "short_id": sha[:8]}, "default": False}

    def get_merge_base(self, request: Request) -> Reply:
        refs = [self.repo.resolve(r) for r in request.query.get("refs[]", [])]
        if len(refs) != 2 or None in refs:
            return 400, {"message": "Provide exactly two refs"}
        base = self.repo.merge_base(str(refs[0]), str(refs[1]))
        return 200, {"id": base, "short_id": str(base)[:8]}

    def list_mrs(self, request: Request) -> Reply:
        state = request.arg("state", "all")
        found = [m for m in self.mrs.values() if state in ("all", m.state)]
        return 200, [self._mr_summary(m) for m in found]

    def get_mr(self, request: Request) -> Reply:
        mr = self._mr(request)
        if mr is None:
            return 404, {"message": "404 Not found"}
        return 200, self._mr_json(mr)

    def list_notes(self, request: Request) -> Reply:
        mr = self._mr(request)
        if mr is None:
            return 404, {"message": "404 Not found"}
        return 200, list(mr.notes)

    def create_note(self, request: Request) -> Reply:
        mr = self._mr(request)
        if mr is None:
            return 404, {"message": "404 Not found"}
        self.note_ids += 1
        note = {
            "id": self.note_ids,
            "body": request.body["body"],
            "system": False,
            "noteable_iid": mr.iid,
            "author": {"id": self.users[self.bot_username], "username": self.bot_username},
            "award_emoji": [],
        }
        mr.notes.append(note)
        return 201, note

    def edit_note(self, request: Request) -> Reply:
        mr = self._mr(request)
        note_id = int(request.match["note"])
        for note in mr.notes if mr else []:
            if note["id"] == note_id:
                if note["author"]["username"] != self.bot_username:
                    return 403, {"message": "403 Forbidden"}
                note["body"] = request.body["body"]
                return 200, note
        return 404, {"message": "404 Note Not Found"}

    def commit_mrs(self, request: Request) -> Reply:
        """Commits API, "List merge requests associated with a commit"
        (``GET /projects/:id/repository/commits/:sha/merge_requests``): the
        merge requests whose commits or merge commit include ``sha``."""
        sha = request.match["sha"]
        found = []
        for mr in self.mrs.values():
            head = self.repo.branches[mr.head_ref]
            if sha in (mr.merge_commit_sha, head):
                found.append(self._mr_summary(mr))
        return 200, found

    def create_status(self, request: Request) -> Reply:
        """POST /projects/:id/statuses/:sha, as Ci::CreateCommitStatusService answers."""
        project_id = self._project_id(request)
        if project_id is None:
            return 404, {"message": "404 Project Not Found"}
        if self._role(project_id) < ROLES["developer"]:
            return 403, {"message": "403 Forbidden"}
        sha = request.match["sha"]
        if sha not in self.repo.commits:
            return 404, {"message": "404 Commit Not Found"}
        body = request.body
        if not body.get("state"):
            return 400, {"message": "State is required"}
        pipeline = self._matching_pipeline(project_id, sha, body)
        ref = (
            body.get("ref")
            or (pipeline or {}).get("ref")
            or self._branch_containing(project_id, sha)
        )
        if not ref:
            return 404, {"message": "404 References for commit Not Found"}
        if body.get("pipeline_id") and pipeline is None:
            return 404, {"message": "404 Pipeline for pipeline_id, sha and ref Not Found"}
        if pipeline is None:
            self.run_pipeline(sha, ref, project_id=project_id)
            pipeline = self.pipelines[-1]
            pipeline["source"] = "external"
        name = body.get("name") or body.get("context") or "default"
        return self._transition(sha, pipeline, ref, name, body)

    def _matching_pipeline(self, project_id: int, sha: str, body: dict[str, Any]) -> Any:
        for pipeline in reversed(self.pipelines):  # newest first
            if (pipeline["project_id"], pipeline["sha"]) != (project_id, sha):
                continue
            if body.get("ref") and pipeline["ref"] != body["ref"]:
                continue
            if body.get("pipeline_id") and pipeline["id"] != int(body["pipeline_id"]):
                continue
            return pipeline
        return None

    def _branch_containing(self, project_id: int, sha: str) -> str | None:
        for branch, head in sorted(self._branches_of(project_id).items()):
            if sha in self.repo.ancestors(head):
                return branch
        return None

    def _transition(
        self, sha: str, pipeline: dict[str, Any], ref: str, name: str, body: dict[str, Any]
    ) -> Reply:
        open_job = None
        for status in self.statuses.get(sha, []):
            same = (status["pipeline_id"], status["ref"], status["name"]) == (
                pipeline["id"],
                ref,
                name,
            )
            if same and status["status"] in ("pending", "running"):
                open_job = status
        current = open_job["status"] if open_job else "created"
        wanted = body["state"]
        # the state machine of CommitStatus: enqueue: created -> pending;
        # run: pending -> running; success/drop/cancel from any open state
        if wanted == "pending" and current != "created":
            return 400, {"message": f"Cannot transition status via :enqueue from :{current}"}
        if wanted == "running" and current == "running":
            return 400, {"message": "Cannot transition status via :run from :running"}
        if wanted not in ("pending", "running", "success", "failed", "canceled", "skipped"):
            return 400, {"message": "state does not have a valid value"}
        status = open_job or {
            "id": sum(len(v) for v in self.statuses.values()) + 1,
            "sha": sha,
            "ref": ref,
            "name": name,
            "pipeline_id": pipeline["id"],
            "project_id": pipeline["project_id"],
        }
        status.update(
            status=wanted,
            description=body.get("description"),
            target_url=body.get("target_url"),
        )
        if open_job is None:
            self.statuses.setdefault(sha, []).append(status)
        return 201, status

    def create_commit(self, request: Request) -> Reply:
        body = request.body
        branch = body["branch"]
        if branch not in self.repo.branches:
            return 400, {"message": "You can only create or edit files when you are on a branch"}
        if branch in self.protected_branches and self._role(PROJECT_ID) < ROLES["maintainer"]:
            return 403, {"message": "You are not allowed to push into this branch"}
        changes: dict[str, bytes | None] = {}
        for action in body["actions"]:
            path = action["file_path"]
            exists = self.repo.file_at(branch, path) is not None
            if action["action"] == "create" and exists:
                return 400, {"message": f"A file with this name already exists: {path}"}
            if action["action"] == "update" and not exists:
                return 400, {"message": f"A file with this name doesn't exist: {path}"}
            content = action["content"]
            if action.get("encoding") == "base64":
                changes[path] = base64.b64decode(content)
            else:
                changes[path] = content.encode()
        sha = self.repo.commit(branch, changes, body["commit_message"])
        return 201, {
            "id": sha,
            "short_id": sha[:8],
            "title": body["commit_message"].splitlines()[0],
            "message": body["commit_message"],
            "parent_ids": self.repo.commits[sha].parents,
        }

    def create_branch(self, request: Request) -> Reply:
        """POST /projects/:id/repository/branches (docs "Branches API")."""
        if not self._project_ok(request):
            return 404, {"message": "404 Project Not Found"}
        if self._role(PROJECT_ID) < ROLES["developer"]:
            return 403, {"message": "403 Forbidden"}
        name, ref = request.arg("branch"), request.arg("ref")
        if request.body:
            name, ref = request.body.get("branch", name), request.body.get("ref", ref)
        if name in self.repo.branches:
            return 400, {"message": "Branch already exists"}
        sha = self.repo.resolve(ref)
        if sha is None:
            return 400, {"message": "Invalid reference name"}
        self.repo.branches[name] = sha
        return 201, {"name": name, "commit": {"id": sha, "short_id": sha[:8]}, "default": False}

    # --- members, emoji reactions, issues ------------------------------------------

    def list_users(self, request: Request) -> Reply:
        name = request.arg("username")
        found = [(n, i) for n, i in self.users.items() if n == name]
        return 200, [{"id": i, "username": n, "state": "active"} for n, i in found]

    def get_member(self, request: Request) -> Reply:
        if not self._project_ok(request):
            return 404, {"message": "404 Project Not Found"}
        user_id = int(request.match["user"])
        level = self.members.get(user_id)
        if level is None:
            return 404, {"message": "404 Not found"}
        username = next((n for n, i in self.users.items() if i == user_id), "")
        return 200, {"id": user_id, "username": username, "state": "active", "access_level": level}

    def award_emoji(self, request: Request) -> Reply:
        mr = self._mr(request)
        note_id = int(request.match["note"])
        note = next((n for n in (mr.notes if mr else []) if n["id"] == note_id), None)
        if note is None:
            return 404, {"message": "404 Note Not Found"}
        name = request.body.get("name") or request.arg("name")
        if not name:
            return 400, {"message": "400 Bad request - name is missing"}
        if name in note["award_emoji"]:
            return 404, {"message": "404 Award Emoji Name has already been taken Not Found"}
        note["award_emoji"].append(name)
        user = {"id": self.users[self.bot_username], "username": self.bot_username}
        return 201, {"id": len(note["award_emoji"]), "name": name, "user": user,
                     "awardable_id": note_id, "awardable_type": "Note"}  # fmt: skip

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {**issue, "project_id": PROJECT_ID, "id": 5000 + issue["iid"]}

    def list_issues(self, request: Request) -> Reply:
        if not self._project_ok(request):
            return 404, {"message": "404 Project Not Found"}
        state = request.arg("state", "all")
        author = request.arg("author_username")
        found = [
            self._issue_json(i)
            for i in sorted(self.issues.values(), key=lambda i: i["iid"])
            if state in ("all", i["state"]) and author in ("", i["author"]["username"])
        ]
        return 200, found

    def create_issue(self, request: Request) -> Reply:
        if not self._project_ok(request):
            return 404, {"message": "404 Project Not Found"}
        description = request.body.get("description") or ""
        if len(description) > 1_048_576:
            return 400, {
                "message": {"description": ["is too long (maximum is 1048576 characters)"]}
            }
        iid = len(self.issues) + 1
        user = {"id": self.users[self.bot_username], "username": self.bot_username}
        self.issues[iid] = {"iid": iid, "title": request.body["title"],
                            "description": description, "state": "opened", "author": user}  # fmt: skip
        return 201, self._issue_json(self.issues[iid])

    def edit_issue(self, request: Request) -> Reply:
        issue = self.issues.get(int(request.match["issue"])) if self._project_ok(request) else None
        if issue is None:
            return 404, {"message": "404 Issue Not Found"}
        description = request.body.get("description", issue["description"])
        if len(description) > 1_048_576:
            return 400, {
                "message": {"description": ["is too long (maximum is 1048576 characters)"]}
            }
        issue["description"] = description
        return 200, self._issue_json(issue)

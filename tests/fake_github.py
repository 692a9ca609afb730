"""A loopback fake of the GitHub REST endpoints wishbot's GitHub adapter uses.

Stateful: one repository with an in-memory git (contents, branches, the git
data API for commits), pull requests, issue comments and commit statuses.
Responses carry the fields GitHub's REST documentation lists, including the
``url`` fields PyGithub follows. Where GitHub answers unkindly, the fake does
too, and says where that is written:

- contents of a file over 1 MB: ``"encoding": "none"`` and empty ``content``
  (REST "Repository contents", Get repository content: "Between 1-100 MB:
  ... the content field will be an empty string and the encoding field will
  be "none""); the git blob serves it (REST "Git blobs": up to 100 MB).
- protected branches (docs "About protected branches"; REST "Git references",
  Update a reference): a ref update on a branch with required status checks
  or "require a pull request" is refused with 422 ("Required status check
  "…" is expected.", "Changes must be made through a pull request.").
- secondary rate limits (REST "Rate limits for the REST API": "you may
  receive a 403 or 429 response ... If the retry-after response header is
  present, you should not retry your request until after that many seconds").
- collaborators' permissions (REST "Collaborators", Get repository permissions
  for a user): 200 ``{"permission", "role_name", "user"}``; ``permission`` is
  admin/write/read/none (maintain reads as write, triage as read),
  ``role_name`` the role itself; a login that is no user is 404.
- reactions on an issue comment (REST "Reactions", Create reaction for an
  issue comment): 201 created, 200 "Reaction exists".
- issues (REST "Issues"): issues and pull requests share one number
  sequence; listing issues lists pull requests too (with a ``pull_request``
  key); a body over 65,536 characters is 422 "body is too long (maximum is
  65536 characters)".
- a GitHub App or the Actions token cannot read ``/user``: 403 "Resource not
  accessible by integration" (REST "Users", Get the authenticated user, is
  not in the permissions an installation token has); it comments as
  ``<app-slug>[bot]``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from fake_http import JsonServer, MemoryRepo, Reply, Request


@dataclass
class FakePull:
    number: int
    title: str
    head_branch: str
    base_branch: str
    head_ref: str
    from_fork: bool = False
    draft: bool = False
    state: str = "open"
    merged: bool = False
    merge_commit_sha: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)


class FakeGitHub(JsonServer):
    def __init__(self, repository: str = "octo/wishlist", token: str = "ghp_secret_token"):
        super().__init__()
        self.full_name = repository
        self.token = token
        self.repo = MemoryRepo()
        self.default_branch = "main"
        self.pulls: dict[int, FakePull] = {}
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.comment_ids = 5000
        self.bot_login: str | None = "wishbot[bot]"  # None: the token cannot read /user
        self.token_login = "wishbot[bot]"  # who the token's comments are written by
        # branch -> required status check contexts (protected, "Require status checks")
        self.protected: dict[str, list[str]] = {}
        self.secondary_limit_next: list[int] = []  # Retry-After seconds of the next answers
        # login -> role (read, triage, write, maintain, admin); others read a public repository
        self.collaborators: dict[str, str] = {"wishbot[bot]": "write", "dev": "write"}
        self.issues: dict[int, dict[str, Any]] = {}
        self.route("GET", r"/user", self.get_user)
        r = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        self.route("GET", r, self.get_repo)
        self.route("GET", r + r"/contents/(?P<path>.+)", self.get_contents)
        self.route("GET", r + r"/branches/(?P<branch>.+)", self.get_branch)
        self.route("GET", r + r"/pulls", self.list_pulls)
        self.route("GET", r + r"/pulls/(?P<number>\d+)", self.get_pull)
        self.route("GET", r + r"/compare/(?P<base>.+)\.\.\.(?P<head>.+)", self.compare)
        self.route("GET", r + r"/commits/(?P<sha>\w+)", self.get_commit)
        self.route("GET", r + r"/commits/(?P<sha>\w+)/pulls", self.commit_pulls)
        self.route("GET", r + r"/issues/(?P<number>\d+)", self.get_issue)
        self.route("GET", r + r"/issues", self.list_issues)
        self.route("POST", r + r"/issues", self.create_issue)
        self.route("PATCH", r + r"/issues/(?P<number>\d+)", self.edit_issue)
        self.route("GET", r + r"/collaborators/(?P<login>[^/]+)/permission", self.permission)
        self.route("POST", r + r"/issues/comments/(?P<id>\d+)/reactions", self.react)
        self.route("GET", r + r"/issues/(?P<number>\d+)/comments", self.list_comments)
        self.route("POST", r + r"/issues/(?P<number>\d+)/comments", self.create_comment)
        self.route("GET", r + r"/issues/comments/(?P<id>\d+)", self.get_comment)
        self.route("PATCH", r + r"/issues/comments/(?P<id>\d+)", self.edit_comment)
        self.route("POST", r + r"/statuses/(?P<sha>\w+)", self.create_status)
        self.route("GET", r + r"/git/refs?/heads/(?P<branch>.+)", self.get_ref)
        self.route("PATCH", r + r"/git/refs/heads/(?P<branch>.+)", self.update_ref)
        self.route("GET", r + r"/git/commits/(?P<sha>\w+)", self.get_git_commit)
        self.route("POST", r + r"/git/refs", self.create_ref)
        self.route("GET", r + r"/git/blobs/(?P<sha>\w+)", self.get_blob)
        self.route("POST", r + r"/git/blobs", self.create_blob)
        self.route("POST", r + r"/git/trees", self.create_tree)
        self.route("POST", r + r"/git/commits", self.create_git_commit)

    # --- test helpers ----------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.base

    @property
    def repo_url(self) -> str:
        return f"{self.base}/repos/{self.full_name}"

    def open_pull(
        self, branch: str, title: str = "change", *, fork: bool = False, draft: bool = False
    ) -> FakePull:
        number = max([*self.pulls, *self.issues], default=0) + 1
        pull = FakePull(number, title, branch, self.default_branch, branch, fork, draft)
        self.pulls[number] = pull
        return pull

    def merge(self, number: int) -> str:
        pull = self.pulls[number]
        sha = self.repo.merge(pull.head_ref, pull.base_branch, f"Merge pull request #{number}")
        pull.state, pull.merged, pull.merge_commit_sha = "closed", True, sha
        return sha

    def human_comment(self, number: int, body: str, login: str = "mallory") -> dict[str, Any]:
        self.comment_ids += 1
        comment = {"id": self.comment_ids, "body": body, "author": login, "reactions": []}
        self.pulls[number].comments.append(comment)
        return comment

    def status_of(self, sha: str, context: str) -> dict[str, Any] | None:
        found = [s for s in self.statuses.get(sha, []) if s["context"] == context]
        return found[-1] if found else None

    # --- plumbing ----------------------------------------------------------------

    def authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        return auth in (f"token {self.token}", f"Bearer {self.token}")

    def dispatch(self, method: str, path: str, query: Any, headers: Any, body: Any) -> Reply:
        with self.lock:
            if self.secondary_limit_next:
                self.requests.append((method, path))
                wait = self.secondary_limit_next.pop(0)
                message = (
                    "You have exceeded a secondary rate limit. Please wait a few minutes "
                    "before you try again."
                )
                return 403, {"message": message}, {"Retry-After": str(wait)}
        return super().dispatch(method, path, query, headers, body)

    def _ok(self, request: Request) -> bool:
        return f"{request.match['owner']}/{request.match['name']}" == self.full_name

    def _repo_json(self, fork: bool = False) -> dict[str, Any]:
        name = "mallory/wishlist" if fork else self.full_name
        return {
            "id": 99 if fork else 1,
            "name": name.split("/")[1],
            "full_name": name,
            "owner": {"login": name.split("/")[0]},
            "default_branch": self.default_branch,
            "url": f"{self.base}/repos/{name}",
            "html_url": f"{self.base}/{name}",
            "fork": fork,
        }

    def _commit_json(self, sha: str) -> dict[str, Any]:
        commit = self.repo.commits[sha]
        return {
            "sha": sha,
            "url": f"{self.repo_url}/commits/{sha}",
            "commit": {"message": commit.message, "url": f"{self.repo_url}/git/commits/{sha}"},
            "parents": [{"sha": p, "url": f"{self.repo_url}/commits/{p}"} for p in commit.parents],
        }

    def _pull_json(self, pull: FakePull) -> dict[str, Any]:
        head = self.repo.branches[pull.head_ref]
        base = self.repo.branches[pull.base_branch]
        return {
            "id": 70000 + pull.number,
            "number": pull.number,
            "url": f"{self.repo_url}/pulls/{pull.number}",
            "html_url": f"{self.base}/{self.full_name}/pull/{pull.number}",
            "issue_url": f"{self.repo_url}/issues/{pull.number}",
            "title": pull.title,
            "state": pull.state,
            "draft": pull.draft,
            "merged": pull.merged,
            "merged_at": "2026-01-01T00:00:00Z" if pull.merged else None,
            "merge_commit_sha": pull.merge_commit_sha,
            "user": {"login": "mallory" if pull.from_fork else "alice"},
            "head": {
                "ref": pull.head_branch,
                "sha": head,
                "label": pull.head_branch,
                "repo": self._repo_json(fork=pull.from_fork),
            },
            "base": {
                "ref": pull.base_branch,
                "sha": base,
                "label": pull.base_branch,
                "repo": self._repo_json(),
            },
        }

    def _pull(self, request: Request) -> FakePull | None:
        return self.pulls.get(int(request.match["number"])) if self._ok(request) else None

    def _comment_json(self, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": comment["id"],
            "body": comment["body"],
            "url": f"{self.repo_url}/issues/comments/{comment['id']}",
            "user": {"login": comment.get("author", self.token_login)},
        }

    # --- endpoints ---------------------------------------------------------------

    def get_user(self, request: Request) -> Reply:
        if self.bot_login is None:
            return 403, {"message": "Resource not accessible by integration"}
        return 200, {"login": self.bot_login, "id": 3, "type": "Bot"}

    def get_repo(self, request: Request) -> Reply:
        if not self._ok(request):
            return 404, {"message": "Not Found"}
        return 200, self._repo_json()

    def get_contents(self, request: Request) -> Reply:
        path = unquote(request.match["path"])
        ref = request.arg("ref", self.default_branch)
        content = self.repo.file_at(ref, path) if self._ok(request) else None
        if content is None:
            return 404, {"message": "Not Found"}
        small = len(content) <= 1024 * 1024
        return 200, {
            "type": "file",
            "encoding": "base64" if small else "none",
            "size": len(content),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": base64.encodebytes(content).decode() if small else "",
            "sha": self.repo.add_blob(content),
            "url": f"{self.repo_url}/contents/{path}?ref={ref}",
        }

    def get_branch(self, request: Request) -> Reply:
        name = unquote(request.match["branch"])
        if name not in self.repo.branches:
            return 404, {"message": "Branch not found"}
        sha = self.repo.branches[name]
        return 200, {"name": name, "commit": self._commit_json(sha), "protected": False}

    def list_pulls(self, request: Request) -> Reply:
        state = request.arg("state", "open")
        found = [p for p in self.pulls.values() if state in ("all", p.state)]
        return 200, [self._pull_json(p) for p in found]

    def get_pull(self, request: Request) -> Reply:
        pull = self._pull(request)
        if pull is None:
            return 404, {"message": "Not Found"}
        return 200, self._pull_json(pull)

    def compare(self, request: Request) -> Reply:
        base = self.repo.resolve(unquote(request.match["base"]))
        head = self.repo.resolve(unquote(request.match["head"]))
        if base is None or head is None:
            return 404, {"message": "Not Found"}
        merge_base = self.repo.merge_base(base, head)
        if merge_base is None:
            return 404, {"message": "No common ancestor"}
        return 200, {
            "url": f"{self.repo_url}/compare/{base}...{head}",
            "status": "ahead",
            "merge_base_commit": self._commit_json(merge_base),
            "base_commit": self._commit_json(base),
        }

    def get_commit(self, request: Request) -> Reply:
        sha = self.repo.resolve(request.match["sha"])
        if sha is None:
            return 422, {"message": "No commit found for SHA"}
        return 200, self._commit_json(sha)

    def commit_pulls(self, request: Request) -> Reply:
        """REST "Commits", "List pull requests associated with a commit"
        (``GET /repos/{owner}/{repo}/commits/{commit_sha}/pulls``): merged pull
        requests that introduced the commit, and open ones whose head it is."""
        sha = request.match["sha"]
        found = [
            self._pull_json(p)
            for p in self.pulls.values()
            if sha in (p.merge_commit_sha, self.repo.branches[p.head_ref])
        ]
        return 200, found

    def get_issue(self, request: Request) -> Reply:
        issue = self.issues.get(int(request.match["number"])) if self._ok(request) else None
        if issue is not None:
            return 200, self._issue_json(issue)
        pull = self._pull(request)
        if pull is None:
            return 404, {"message": "Not Found"}
        return 200, {
            "id": 80000 + pull.number,
            "number": pull.number,
            "url": f"{self.repo_url}/issues/{pull.number}",
            "comments_url": f"{self.repo_url}/issues/{pull.number}/comments",
            "title": pull.title,
            "state": pull.state,
            "pull_request": {"url": f"{self.repo_url}/pulls/{pull.number}"},
        }

    def list_comments(self, request: Request) -> Reply:
        pull = self._pull(request)
        if pull is None:
            return 404, {"message": "Not Found"}
        return 200, [self._comment_json(c) for c in pull.comments]

    def create_comment(self, request: Request) -> Reply:
        pull = self._pull(request)
        if pull is None:
            return 404, {"message": "Not Found"}
        body = request.body["body"]
        if len(body) > 65536:
            return 422, {"message": "Validation Failed: body is too long"}
        self.comment_ids += 1
        comment = {"id": self.comment_ids, "body": body, "author": self.token_login}
        pull.comments.append(comment)
        return 201, self._comment_json(comment)

    def _find_comment(self, comment_id: int) -> dict[str, Any] | None:
        for pull in self.pulls.values():
            for comment in pull.comments:
                if comment["id"] == comment_id:
                    return comment
        return None

    def get_comment(self, request: Request) -> Reply:
        comment = self._find_comment(int(request.match["id"]))
        if comment is None:
            return 404, {"message": "Not Found"}
        return 200, self._comment_json(comment)

    def edit_comment(self, request: Request) -> Reply:
        comment = self._find_comment(int(request.match["id"]))
        if comment is None:
            return 404, {"message": "Not Found"}
        if comment["author"] != self.token_login:  # only the author (or an admin) edits
            return 403, {"message": "Resource not accessible by integration"}
        comment["body"] = request.body["body"]
        return 200, self._comment_json(comment)

    def create_status(self, request: Request) -> Reply:
        sha = request.match["sha"]
        body = request.body
        if sha not in self.repo.commits:
            return 422, {"message": "No commit found for SHA"}
        if body["state"] not in ("error", "failure", "pending", "success"):
            return 422, {"message": "Validation Failed: state"}
        context = body.get("context") or "default"
        if len(context) > 255 or len(body.get("description") or "") > 140:
            return 422, {"message": "Validation Failed: too long"}
        status = {
            "state": body["state"],
            "context": context,
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "url": f"{self.repo_url}/statuses/{sha}",
        }
        self.statuses.setdefault(sha, []).append(status)
        return 201, status

    def _ref_json(self, branch: str) -> dict[str, Any]:
        sha = self.repo.branches[branch]
        return {
            "ref": f"refs/heads/{branch}",
            "url": f"{self.repo_url}/git/refs/heads/{branch}",
            "object": {"sha": sha, "type": "commit", "url": f"{self.repo_url}/git/commits/{sha}"},
        }

    def get_ref(self, request: Request) -> Reply:
        branch = unquote(request.match["branch"])
        if branch not in self.repo.branches:
            return 404, {"message": "Not Found"}
        return 200, self._ref_json(branch)

    def update_ref(self, request: Request) -> Reply:
        branch = unquote(request.match["branch"])
        new = request.body["sha"]
        old = self.repo.branches.get(branch)
        if old is None or new not in self.repo.commits:
            return 422, {"message": "Reference does not exist"}
        if not request.body.get("force") and old not in self.repo.ancestors(new):
            return 422, {"message": "Update is not a fast forward"}
        if branch in self.protected:
            checks = self.protected[branch]
            if not checks:
                return 422, {"message": "Changes must be made through a pull request."}
            return 422, {"message": f'Required status check "{checks[0]}" is expected.'}
        self.repo.branches[branch] = new
        return 200, self._ref_json(branch)

    def _git_commit_json(self, sha: str) -> dict[str, Any]:
        commit = self.repo.commits[sha]
        return {
            "sha": sha,
            "url": f"{self.repo_url}/git/commits/{sha}",
            "message": commit.message,
            "tree": {"sha": commit.tree, "url": f"{self.repo_url}/git/trees/{commit.tree}"},
            "parents": [
                {"sha": p, "url": f"{self.repo_url}/git/commits/{p}"} for p in commit.parents
            ],
        }

    def get_git_commit(self, request: Request) -> Reply:
        sha = request.match["sha"]
        if sha not in self.repo.commits:
            return 404, {"message": "Not Found"}
        return 200, self._git_commit_json(sha)

    def create_ref(self, request: Request) -> Reply:
        ref, sha = request.body["ref"], request.body["sha"]
        branch = ref.removeprefix("refs/heads/")
        if not ref.startswith("refs/heads/") or sha not in self.repo.commits:
            return 422, {"message": "Reference update failed"}
        if branch in self.repo.branches:
            return 422, {"message": "Reference already exists"}
        self.repo.branches[branch] = sha
        return 201, self._ref_json(branch)

    def get_blob(self, request: Request) -> Reply:
        sha = request.match["sha"]
        data = self.repo.blobs.get(sha)
        if data is None:
            return 404, {"message": "Not Found"}
        return 200, {
            "sha": sha,
            "size": len(data),
            "url": f"{self.repo_url}/git/blobs/{sha}",
            "content": base64.encodebytes(data).decode(),
            "encoding": "base64",
        }

    def create_blob(self, request: Request) -> Reply:
        body = request.body
        if body.get("encoding") == "base64":
            data = base64.b64decode(body["content"])
        else:
            data = body["content"].encode()
        sha = self.repo.add_blob(data)
        return 201, {"sha": sha, "url": f"{self.repo_url}/git/blobs/{sha}"}

    def create_tree(self, request: Request) -> Reply:
        body = request.body
        files: dict[str, bytes] = {}
        if body.get("base_tree"):
            if body["base_tree"] not in self.repo.trees:
                return 422, {"message": "base_tree is not a valid tree"}
            files.update(self.repo.trees[body["base_tree"]])
        for element in body["tree"]:
            if element["sha"] not in self.repo.blobs:
                return 422, {"message": "tree.sha is not a valid blob"}
            files[element["path"]] = self.repo.blobs[element["sha"]]
        sha = self.repo.add_tree(files)
        return 201, {"sha": sha, "url": f"{self.repo_url}/git/trees/{sha}", "tree": []}

    def create_git_commit(self, request: Request) -> Reply:
        body = request.body
        if body["tree"] not in self.repo.trees:
            return 422, {"message": "Tree SHA does not exist"}
        sha = self.repo.add_commit(body["tree"], list(body["parents"]), body["message"])
        return 201, self._git_commit_json(sha)

    # --- permissions, reactions, issues ---------------------------------------------

    def permission(self, request: Request) -> Reply:
        login = unquote(request.match["login"])
        if not self._ok(request):
            return 404, {"message": "Not Found"}
        if login.startswith("ghost-"):  # no such user
            return 404, {"message": "Not Found"}
        role = self.collaborators.get(login, "read")  # a public repository: anyone reads
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return 200, {"permission": legacy, "role_name": role, "user": {"login": login}}

    def react(self, request: Request) -> Reply:
        comment = self._find_comment(int(request.match["id"]))
        if comment is None:
            return 404, {"message": "Not Found"}
        content = request.body.get("content")
        if content not in ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"):
            return 422, {"message": "Validation Failed"}
        reaction = {"id": 1, "content": content, "user": {"login": self.token_login}}
        reactions = comment.setdefault("reactions", [])
        if content in reactions:
            return 200, reaction
        reactions.append(content)
        return 201, reaction

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": 90000 + issue["number"],
            "number": issue["number"],
            "url": f"{self.repo_url}/issues/{issue['number']}",
            "title": issue["title"],
            "body": issue["body"],
            "state": issue["state"],
            "user": {"login": issue["author"]},
        }

    def list_issues(self, request: Request) -> Reply:
        if not self._ok(request):
            return 404, {"message": "Not Found"}
        state = request.arg("state", "open")
        creator = request.arg("creator")
        found: list[tuple[int, dict[str, Any]]] = []
        for issue in self.issues.values():
            if state in ("all", issue["state"]) and creator in ("", issue["author"]):
                found.append((issue["number"], self._issue_json(issue)))
        for pull in self.pulls.values():
            author = "mallory" if pull.from_fork else "alice"
            if state in ("all", pull.state) and creator in ("", author):
                found.append((pull.number, {"number": pull.number, "title": pull.title,
                    "body": "", "state": pull.state, "user": {"login": author},
                    "pull_request": {"url": f"{self.repo_url}/pulls/{pull.number}"}}))  # fmt: skip
        per_page = int(request.arg("per_page", "30"))
        return 200, [data for _, data in sorted(found, key=lambda f: f[0])][:per_page]

    def create_issue(self, request: Request) -> Reply:
        if not self._ok(request):
            return 404, {"message": "Not Found"}
        body = request.body.get("body") or ""
        if len(body) > 65536:
            return 422, {"message": "body is too long (maximum is 65536 characters)"}
        number = max([*self.pulls, *self.issues], default=0) + 1
        self.issues[number] = {"number": number, "title": request.body["title"], "body": body,
                               "state": "open", "author": self.token_login}  # fmt: skip
        return 201, self._issue_json(self.issues[number])

    def edit_issue(self, request: Request) -> Reply:
        issue = self.issues.get(int(request.match["number"])) if self._ok(request) else None
        if issue is None:
            return 404, {"message": "Not Found"}
        body = request.body.get("body", issue["body"])
        if len(body) > 65536:
            return 422, {"message": "body is too long (maximum is 65536 characters)"}
        issue["body"] = body
        return 200, self._issue_json(issue)

    def human_issue_edit(self, number: int, body: str) -> None:
        """A person edits the issue (ticks a box)."""
        self.issues[number]["body"] = body

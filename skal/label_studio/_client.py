"""A small client of Label Studio's HTTP API (plain ``requests``, no SDK)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

UNCERTAINTY_SAMPLING = "Uncertainty sampling"
SCORE_ORDERING = "tasks:predictions_score"


class LabelStudioError(RuntimeError):
    """A request to Label Studio failed; the message has Label Studio's answer.

    Parameters
    ----------
    method : str
        The request's HTTP method.
    url : str
        The path requested.
    status : int
        The HTTP status of the answer.
    text : str
        The answer's body.

    Examples
    --------
    >>> from skal.label_studio import LabelStudioError
    >>> error = LabelStudioError("GET", "/api/projects/9", 404, "Not found")
    >>> error.status, str(error)
    (404, 'GET /api/projects/9 answered 404: Not found')
    """

    def __init__(self, method, url, status, text):
        self.status = status
        super().__init__(f"{method} {url} answered {status}: {text[:500]}")


@dataclass(frozen=True)
class ChoicesSchema:
    """Where a project's class choice lives in its labelling configuration.

    Parameters
    ----------
    from_name : str
        The ``name`` of the ``<Choices>`` tag.
    to_name : str
        Its ``toName``: the ``<Image>`` tag the choice is about.
    values : tuple of str
        The ``value`` of each ``<Choice>``, in order.

    Examples
    --------
    >>> from skal.label_studio import ChoicesSchema
    >>> schema = ChoicesSchema.parse(
    ...     '<View><Image name="img" value="$img"/>'
    ...     '<Choices name="kind" toName="img"><Choice value="cat"/>'
    ...     '<Choice value="dog"/></Choices></View>'
    ... )
    >>> schema.values
    ('cat', 'dog')
    >>> schema.value_of(schema.result("dog"))
    'dog'
    """

    from_name: str
    to_name: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, label_config: str) -> ChoicesSchema:
        """Find the single ``<Choices>`` tag of a labelling configuration.

        Parameters
        ----------
        label_config : str
            The project's ``label_config`` XML.

        Returns
        -------
        schema : ChoicesSchema
        """
        try:
            root = ET.fromstring(label_config)
        except ET.ParseError as exc:
            raise ValueError(f"the project's label_config is not XML: {exc}") from None
        tags = [el for el in root.iter() if el.tag == "Choices"]
        if len(tags) != 1:
            raise ValueError(
                "skal labels one class per image: the project's label_config "
                f"must have exactly one <Choices> tag, found {len(tags)}"
            )
        tag = tags[0]
        values = tuple(
            el.get("value")
            for el in tag.iter()
            if el.tag == "Choice" and el.get("value")
        )
        if not tag.get("name") or not tag.get("toName") or not values:
            raise ValueError(
                "the <Choices> tag of the project's label_config needs a name, a "
                "toName and at least one <Choice value=...>"
            )
        return cls(tag.get("name"), tag.get("toName"), values)

    def result(self, value: str) -> list[dict]:
        """A prediction or annotation ``result`` choosing ``value``.

        Parameters
        ----------
        value : str
            One of :attr:`values`.

        Returns
        -------
        result : list of dict
        """
        return [
            {
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": "choices",
                "value": {"choices": [value]},
            }
        ]

    def value_of(self, result: list[dict]) -> str | None:
        """The chosen value in an annotation's ``result``, or None.

        Parameters
        ----------
        result : list of dict
            An annotation's ``result``.

        Returns
        -------
        value : str or None
        """
        for item in result or ():
            if (
                item.get("from_name") == self.from_name
                and item.get("type") == "choices"
            ):
                choices = item.get("value", {}).get("choices") or []
                if choices:
                    return choices[0]
        return None


def image_classification_config(
    classes, *, from_name: str = "label", to_name: str = "image"
) -> str:
    """A Label Studio labelling configuration: one image, one class to pick.

    Parameters
    ----------
    classes : sequence
        The classes, in the order the buttons appear; each is shown and
        stored as ``str(c)``.
    from_name : str, default="label"
        Name of the ``<Choices>`` tag.
    to_name : str, default="image"
        Name of the ``<Image>`` tag; tasks carry the image URL under this key.

    Returns
    -------
    label_config : str

    Examples
    --------
    >>> from skal.label_studio import ChoicesSchema, image_classification_config
    >>> config = image_classification_config(["cat", "dog"])
    >>> ChoicesSchema.parse(config)
    ChoicesSchema(from_name='label', to_name='image', values=('cat', 'dog'))
    """
    values = [str(c) for c in classes]
    if not values or len(set(values)) != len(values):
        raise ValueError(
            f"classes must be a non-empty sequence of distinct values, got {classes!r}"
        )
    choices = "".join(
        f'<Choice value="{_xml_escape(v)}"/>' for v in values
    )  # fmt: skip
    return (
        f'<View><Image name="{to_name}" value="${to_name}"/>'
        f'<Choices name="{from_name}" toName="{to_name}" choice="single" '
        f'showInline="true">{choices}</Choices></View>'
    )


def _xml_escape(text):
    return (
        text.replace("&", "&amp;")
        .replace('"', "&quot;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


class LabelStudioClient:
    """The calls of Label Studio's HTTP API that skal uses.

    Parameters
    ----------
    url : str
        Label Studio's address, e.g. ``"http://localhost:8080"``.
    api_key : str
        A personal access token (Account & Settings → Personal Access Token,
        a JWT refresh token, exchanged here for short-lived access tokens) or
        a legacy token (40 hexadecimal characters, sent as ``Token <key>``).
    timeout : float, default=120
        Seconds to wait for any one answer.

    Examples
    --------
    >>> from skal.label_studio import LabelStudioClient
    >>> client = LabelStudioClient("http://localhost:8080", "0" * 40)
    >>> client.url
    'http://localhost:8080'
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 120.0):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be Label Studio's http(s) address, got {url!r}")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError(
                "api_key must be a Label Studio access token (a non-empty str), "
                f"got {api_key!r}"
            )
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._http = requests.Session()
        self._access = None

    # ------------------------------------------------------------ requests
    def _auth(self, refresh=False):
        if "." not in self.api_key:
            return {"Authorization": f"Token {self.api_key}"}
        if self._access is None or refresh:
            answer = self._http.post(
                f"{self.url}/api/token/refresh",
                json={"refresh": self.api_key},
                timeout=self.timeout,
            )
            if answer.status_code != 200:
                raise LabelStudioError(
                    "POST", "/api/token/refresh", answer.status_code, answer.text
                )
            self._access = answer.json()["access"]
        return {"Authorization": f"Bearer {self._access}"}

    def request(self, method: str, path: str, **kwargs) -> Any:
        """Send one request and decode Label Studio's JSON answer.

        Parameters
        ----------
        method : str
            HTTP method.
        path : str
            Path below the server's address, e.g. ``"/api/projects/1"``.
        **kwargs
            Passed to :meth:`requests.Session.request` (``json``, ``params``).

        Returns
        -------
        answer : object
            The decoded JSON body (None when empty).

        Raises
        ------
        LabelStudioError
            For an answer other than 2xx.
        """
        kwargs.setdefault("timeout", self.timeout)
        answer = self._http.request(
            method, self.url + path, headers=self._auth(), **kwargs
        )
        if answer.status_code == 401 and "." in self.api_key:
            answer = self._http.request(
                method, self.url + path, headers=self._auth(refresh=True), **kwargs
            )
        if not 200 <= answer.status_code < 300:
            raise LabelStudioError(method, path, answer.status_code, answer.text)
        if not answer.content:
            return None
        return answer.json()

    # ------------------------------------------------------------ projects
    def project(self, project: int) -> dict:
        """The project's settings (``label_config``, ``model_version``, ...).

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        settings : dict
        """
        return self.request("GET", f"/api/projects/{_check_project(project)}")

    def create_project(self, title: str, label_config: str, **settings) -> int:
        """Create a project.

        Parameters
        ----------
        title : str
            At least 3 characters.
        label_config : str
            See :func:`image_classification_config`.
        **settings
            Further project fields (``maximum_annotations``, ...).

        Returns
        -------
        project : int
            The new project's id.
        """
        body = {"title": title, "label_config": label_config, **settings}
        return self.request("POST", "/api/projects", json=body)["id"]

    def update_project(self, project: int, **fields) -> dict:
        """Change project fields (``model_version``, ``sampling``, ...).

        Parameters
        ----------
        project : int
            The project's id.
        **fields
            The fields and their new values.

        Returns
        -------
        settings : dict
            The project's settings after the change.
        """
        return self.request(
            "PATCH", f"/api/projects/{_check_project(project)}", json=fields
        )

    # --------------------------------------------------------------- tasks
    def import_images(
        self, project: int, files, *, document_root=None, key: str = "image"
    ) -> dict[int, int]:
        """Make one task per image, served through Label Studio's local storage.

        Each task is ``{key: "/data/local-files/?d=<path>", "pool_index": i}``
        for the ``i``-th file. A local-storage connection covering the
        files' folder is created unless one exists (Label Studio serves a
        local file only under such a connection). Rows already imported (by
        their ``pool_index``) are not imported again.

        Parameters
        ----------
        project : int
            The project's id.
        files : sequence of path-like
            One image per pool row, in pool order.
        document_root : path-like, default=None
            Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``; the
            files must lie below it. None reads that environment variable.
        key : str, default="image"
            The task data key the ``<Image>`` tag reads (``value="$image"``).

        Returns
        -------
        task_ids : dict
            ``pool_index -> task id`` for every row.
        """
        project = _check_project(project)
        root = document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        if not root:
            raise ValueError(
                "document_root is None and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is "
                "not set: pass the folder Label Studio serves local files from"
            )
        root = Path(root).resolve()
        files = [Path(f).resolve() for f in files]
        relative = []
        for f in files:
            try:
                relative.append(f.relative_to(root).as_posix())
            except ValueError:
                raise ValueError(
                    f"image {str(f)!r} is not below document_root {str(root)!r}; "
                    "Label Studio serves only files below its document root"
                ) from None
        folders = {str(f.parent) for f in files}
        storages = self.request(
            "GET", "/api/storages/localfiles", params={"project": project}
        )
        covered = [s["path"] for s in storages]
        for folder in sorted(folders):
            if not any(
                folder == c or folder.startswith(c.rstrip("/") + "/") for c in covered
            ):
                self.request(
                    "POST",
                    "/api/storages/localfiles",
                    json={
                        "project": project,
                        "path": folder,
                        "regex_filter": "",
                        "use_blob_urls": True,
                        "title": "skal pool",
                    },
                )
                covered.append(folder)
        existing = self.task_ids(project)
        missing = [i for i in range(len(files)) if i not in existing]
        if missing:
            tasks = [
                {key: f"/data/local-files/?d={relative[i]}", "pool_index": i}
                for i in missing
            ]
            answer = self.request(
                "POST",
                f"/api/projects/{project}/import",
                params={"return_task_ids": "true"},
                json=tasks,
            )
            existing.update(zip(missing, answer["task_ids"]))
        return existing

    def task_ids(self, project: int) -> dict[int, int]:
        """Map ``pool_index`` to task id, for the tasks that carry one.

        This lists every task of the project (about 12 s for 10,000 tasks).

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        task_ids : dict
        """
        project = _check_project(project)
        answer = self.request(
            "GET",
            "/api/tasks",
            params={
                "project": project,
                "page_size": 1_000_000,
                "fields": "task_only",
                "include": "id,data",
            },
        )
        tasks = answer["tasks"] if isinstance(answer, dict) else answer
        mapping = {}
        for task in tasks:
            index = task.get("data", {}).get("pool_index")
            if isinstance(index, int):
                mapping[index] = task["id"]
        return mapping

    def annotated_tasks(self, project: int) -> list[dict]:
        """Every task with at least one annotation, with its annotations.

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        tasks : list of dict
            Label Studio's JSON export of the annotated tasks.
        """
        return self.request(
            "GET",
            f"/api/projects/{_check_project(project)}/export",
            params={"exportType": "JSON", "download_all_tasks": "false"},
        )

    def next_task(self, project: int) -> dict:
        """The task Label Studio's label stream serves next to this user.

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        task : dict
        """
        return self.request("GET", f"/api/projects/{_check_project(project)}/next")

    def annotate(self, task: int, result: list[dict]) -> dict:
        """Create an annotation of a task (what a person's submit does).

        Parameters
        ----------
        task : int
            The task's id.
        result : list of dict
            The annotation's result (see :meth:`ChoicesSchema.result`).

        Returns
        -------
        annotation : dict
        """
        return self.request(
            "POST", f"/api/tasks/{int(task)}/annotations", json={"result": result}
        )

    # --------------------------------------------------------- predictions
    def import_predictions(self, project: int, predictions: list[dict]) -> int:
        """Import predictions in one request.

        Parameters
        ----------
        project : int
            The project's id.
        predictions : list of dict
            ``{"task", "result", "score", "model_version"}`` each; a score
            outside [0, 1] is dropped by Label Studio without an error.

        Returns
        -------
        n_created : int
        """
        answer = self.request(
            "POST",
            f"/api/projects/{_check_project(project)}/import/predictions",
            json=predictions,
        )
        return answer.get("created", 0)

    def model_versions(self, project: int) -> dict[str, int]:
        """Count the project's predictions by ``model_version``.

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        counts : dict
        """
        return self.request(
            "GET", f"/api/projects/{_check_project(project)}/model-versions"
        )

    def delete_model_version(self, project: int, model_version: str) -> None:
        """Delete the project's predictions of one ``model_version``.

        Parameters
        ----------
        project : int
            The project's id.
        model_version : str
            The version whose predictions go.
        """
        self.request(
            "DELETE",
            f"/api/projects/{_check_project(project)}/model-versions",
            json={"model_version": model_version},
        )

    # -------------------------------------------------------- Data Manager
    def order_views_by_score(self, project: int) -> int:
        """Order the project's Data Manager tabs by prediction score, lowest first.

        Label Studio's web page ("Label All Tasks") takes its next task from
        the Data Manager tab the person is on, in that tab's order, rather
        than from the project's sampling; ordered by ``predictions_score``
        (the score of the project's ``model_version``, tasks without one
        last), it serves the lowest score first, as the API's ``next`` does.
        A tab is created when the project has none yet.

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        n_changed : int
            How many tabs were changed or created.
        """
        project = _check_project(project)
        views = self.request("GET", "/api/dm/views", params={"project": project})
        changed = 0
        for view in views:
            data = dict(view.get("data") or {})
            if data.get("ordering") == [SCORE_ORDERING]:
                continue
            data["ordering"] = [SCORE_ORDERING]
            self.request(
                "PATCH",
                f"/api/dm/views/{view['id']}",
                json={"project": project, "data": data},
            )
            changed += 1
        if not views:
            self.request(
                "POST",
                "/api/dm/views",
                json={
                    "project": project,
                    "data": {
                        "title": "skal order",
                        "ordering": [SCORE_ORDERING],
                        "filters": {"conjunction": "and", "items": []},
                    },
                },
            )
            changed += 1
        return changed

    # ---------------------------------------------------------- ML backend
    def ml_backends(self, project: int) -> list[dict]:
        """The ML backends connected to the project.

        Parameters
        ----------
        project : int
            The project's id.

        Returns
        -------
        backends : list of dict
        """
        return self.request(
            "GET", "/api/ml", params={"project": _check_project(project)}
        )

    def connect_backend(self, project: int, url: str, title: str = "skal") -> dict:
        """Connect an ML backend (Label Studio then calls its /health, /setup).

        Label Studio also creates a webhook to ``<url>/webhook`` for all
        events of the project. Nothing is done if a backend with this URL is
        already connected.

        Parameters
        ----------
        project : int
            The project's id.
        url : str
            The backend's address.
        title : str, default="skal"
            Its name in the project's settings.

        Returns
        -------
        backend : dict
        """
        for backend in self.ml_backends(project):
            if backend["url"].rstrip("/") == url.rstrip("/"):
                return backend
        return self.request(
            "POST",
            "/api/ml",
            json={"project": _check_project(project), "url": url, "title": title},
        )


def _check_project(project):
    if isinstance(project, bool) or not isinstance(project, int | str):
        raise TypeError(
            f"project must be a Label Studio project id (int), got {project!r}"
        )
    try:
        value = int(project)
    except ValueError:
        raise ValueError(
            f"project must be a Label Studio project id (int), got {project!r}"
        ) from None
    if value < 1:
        raise ValueError(f"project must be a positive project id, got {project!r}")
    return value

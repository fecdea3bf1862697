"""From a request to a stored, analysed record: the one path ``POST /predict``, ``POST /studies`` and
``POST /pacs/studies/{uid}/analyze`` share (a dependency: :data:`IntakeDep`).

Why one home: those routes differ only in where the bytes come from (one upload, many, a PACS) and which pipeline
reads them (:func:`~braintumor.api.analysis.analyse`, :func:`~braintumor.api.study_analysis.analyse_study`). What
follows is the same and must stay the same for all of them: the analysis runs in a worker thread bounded by
``max_concurrent_predictions`` (:func:`in_predict_slot`, also the DICOM export's bound), with the site's
de-identification salt; the record is stored for the signed-in user with all its files or not at all; then it is
audited and the answer's ``Location`` names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

import anyio
from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from braintumor.api.config import Settings
from braintumor.api.deps import AuditDep, CurrentUser, PredictorDep, SettingsDep, StorageDep
from braintumor.api.logs import AuditLog
from braintumor.inference.predictor import Predictor
from braintumor.storage import Blob, NewScan, ScanRecord, Storage, UserRecord

T = TypeVar("T")


class Analysed(Protocol):
    """What an analysis pipeline returns: the record and its blobs, ready for :meth:`Storage.add_scan`."""

    @property
    def scan(self) -> NewScan: ...

    @property
    def blobs(self) -> list[Blob]: ...


class Analyser(Protocol):
    """A pipeline with its input bound (e.g. ``partial(analyse, data, filename)``): called in the worker thread."""

    def __call__(self, predictor: Predictor, settings: Settings, *, salt: bytes) -> Analysed: ...


async def in_predict_slot(request: Request, work: Callable[[], T]) -> T:
    """``work()`` in a worker thread, holding one of the ``max_concurrent_predictions`` slots while it runs."""
    limiter: anyio.CapacityLimiter = request.app.state.predict_limiter
    return await anyio.to_thread.run_sync(work, limiter=limiter)


@dataclass(frozen=True)
class Intake:
    """The signed-in user, the model and the storage of a route that analyses and stores."""

    request: Request
    response: Response
    user: UserRecord
    predictor: Predictor
    settings: Settings
    storage: Storage
    audit: AuditLog

    async def store(self, analyser: Analyser) -> ScanRecord:
        """Run ``analyser`` (bounded like every analysis) and store its record as the user's."""
        salt: bytes = self.request.app.state.deid_salt
        analysis = await in_predict_slot(self.request, lambda: analyser(self.predictor, self.settings, salt=salt))
        scan = NewScan(**{**analysis.scan.__dict__, "owner_id": self.user.id})
        return await run_in_threadpool(self.storage.add_scan, scan, analysis.blobs)

    def created(self, rec: ScanRecord, location: str, action: str, **details: Any) -> None:
        """Audit the new record as ``action`` (with ``details``) and name it in the answer's ``Location``."""
        self.audit.record(action, actor=self.user.username, target=rec.id, outcome=rec.outcome, **details)
        self.response.headers["Location"] = location


def _intake(
    request: Request,
    response: Response,
    user: CurrentUser,
    predictor: PredictorDep,
    settings: SettingsDep,
    storage: StorageDep,
    audit: AuditDep,
) -> Intake:
    return Intake(request, response, user, predictor, settings, storage, audit)


IntakeDep = Annotated[Intake, Depends(_intake)]


def intake_route(
    router: APIRouter, path: str, model: type[BaseModel], errors: Mapping[int, str]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``router.post(path)`` for a route that takes an :data:`IntakeDep`: 201 with ``model`` (and the ``Location``
    of :meth:`Intake.created`), documenting each error status it may answer with its description."""
    responses: dict[int | str, dict[str, Any]] = {code: {"description": why} for code, why in errors.items()}
    return router.post(path, status_code=status.HTTP_201_CREATED, response_model=model, responses=responses)

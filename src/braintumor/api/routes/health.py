"""``GET /health``: is the model loaded, is the storage reachable (for load balancers and the UI)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from braintumor import __version__
from braintumor.api.deps import StorageDep
from braintumor.api.schemas import Health, ModelHealth, StorageHealth

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request, response: Response, storage: StorageDep) -> Health:
    """200 with ``ok`` (or ``degraded`` when no model is loaded: history still works); 503 when the storage is
    unreachable."""
    predictor = request.app.state.predictor
    if predictor is not None:
        model = ModelHealth(loaded=True, name=predictor.name, version=predictor.version, card=predictor.card_summary())
    else:
        model = ModelHealth(loaded=False, reason=request.app.state.model_error)
    reachable = storage.ping()
    state = "unavailable" if not reachable else ("ok" if predictor is not None else "degraded")
    if not reachable:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status=state,  # type: ignore[arg-type]
        version=__version__,
        model=model,
        storage=StorageHealth(backend=storage.backend, reachable=reachable),
    )

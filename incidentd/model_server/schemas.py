"""Request bodies of the model server's API (pydantic at the edge)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from incidentd.model_server.fault_params import FaultKind

MAX_ROWS = 256

FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Annotated[list[list[FiniteFloat | None]], Field(min_length=1, max_length=MAX_ROWS)]


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    label: Annotated[StrictInt, Field(ge=0)]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    label: Annotated[StrictInt, Field(ge=0)] | None = None
    items: Annotated[list[FeedbackItem], Field(min_length=1, max_length=10_000)] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        single = self.request_id is not None or self.label is not None
        if single and self.items is not None:
            raise ValueError("give either request_id and label, or items, not both")
        if not single and self.items is None:
            raise ValueError("give request_id and label, or items")
        if single and (self.request_id is None or self.label is None):
            raise ValueError("request_id and label are both required")
        return self

    def pairs(self) -> list[FeedbackItem]:
        if self.items is not None:
            return self.items
        assert self.request_id is not None and self.label is not None
        return [FeedbackItem(request_id=self.request_id, label=self.label)]


class VersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[str, Field(min_length=1, max_length=64)]


class ClampRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    bounds: Literal["minmax", "percentile"] = "minmax"
    percentile: Annotated[float, Field(gt=50.0, le=100.0)] = 99.9
    margin: Annotated[float, Field(ge=0.0, le=10.0)] = 0.1


class FaultRequest(BaseModel):
    """``params`` are validated per fault kind by ``incidentd.model_server.fault_params``."""

    model_config = ConfigDict(extra="forbid")
    fault: FaultKind
    params: dict[str, Any] = Field(default_factory=dict)


def unprocessable(loc: list[str | int], msg: str, typ: str = "value_error") -> HTTPException:
    return HTTPException(status_code=422, detail=[{"loc": loc, "msg": msg, "type": typ}])

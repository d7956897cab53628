"""JSON shapes of the HTTP API (request models carry the app's limits, so they are made per app)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, create_model, field_validator

from xmodal.serve.limits import Limits

__all__ = [
    "Health",
    "ItemOut",
    "Mode",
    "Problem",
    "ResultOut",
    "SearchResponse",
    "Target",
    "WriteResponse",
    "text_query_model",
]

Mode = Literal["float", "hamming", "two-stage"]
Target = Literal["image", "text"]


class Problem(BaseModel):
    """Every error response: what was wrong."""

    detail: str | list[Any]


class ResultOut(BaseModel):
    """One ranked row."""

    rank: int
    id: str
    score: float
    modality: Target
    row: int
    caption: str | None
    captions: list[str]
    labels: list[str]
    distance: int | None
    image_url: str | None
    thumbnail_url: str | None


class SearchResponse(BaseModel):
    """Results of one query."""

    target: Target
    mode: Mode
    k: int
    version: int
    took_ms: float
    results: list[ResultOut]


class ItemOut(BaseModel):
    """What the index holds of one item."""

    id: str
    captions: list[str]
    labels: list[str]
    extra: dict[str, Any]
    image_url: str | None
    thumbnail_url: str | None


class WriteResponse(BaseModel):
    """Outcome of ``POST /items`` or ``DELETE /items/{id}``."""

    id: str
    action: Literal["added", "deleted"]
    version: int
    items: int


class Health(BaseModel):
    """Service status and what the index holds."""

    status: Literal["ok"]
    version: int
    items: int
    texts: int
    dim: int
    bits: int
    model: str
    read_only: bool
    limits: dict[str, int | float]


def _utf8(value: str, what: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not valid Unicode (lone surrogate)") from e
    return value


class _TextQueryBase(BaseModel):
    model_config = {"extra": "forbid"}

    @field_validator("query", check_fields=False)
    @classmethod
    def _query_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is blank")
        return _utf8(v, "query")

    @field_validator("labels", check_fields=False)
    @classmethod
    def _labels_text(cls, v: list[str] | None) -> list[str] | None:
        for label in v or []:
            _utf8(label, "label")
        return v


def text_query_model(limits: Limits) -> type[BaseModel]:
    """The body of ``POST /search/text`` with ``limits`` in its schema."""
    label = Annotated[str, Field(min_length=1, max_length=limits.max_label_chars)]
    return create_model(
        "TextQuery",
        __base__=_TextQueryBase,
        query=(
            str,
            Field(
                min_length=1,
                max_length=limits.max_query_chars,
                description="The text to search with.",
                examples=["a cat with a smiling face"],
            ),
        ),
        k=(StrictInt, Field(10, ge=1, le=limits.max_k, description="Results to return.")),
        mode=(Mode, Field("float", description="float, hamming or two-stage.")),
        target=(
            Target,
            Field("image", description="image: text→image; text: text→text (captions)."),
        ),
        labels=(
            list[label] | None,
            Field(
                None,
                min_length=1,
                max_length=limits.max_labels,
                description="Only items with any of these labels.",
            ),
        ),
        candidates=(
            StrictInt,
            Field(1000, ge=1, le=limits.max_candidates, description="Two-stage candidates."),
        ),
    )

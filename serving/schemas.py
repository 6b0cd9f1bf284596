"""Typed request and response schemas of ``POST /predict``, one record schema per source.

They document the API (OpenAPI at ``/openapi.json``) closely enough that a schema-driven fuzzer
builds records the models score. The gateway does not validate bodies with these models (too
slow at 4,096 records): it decodes the body with orjson and checks each record with the
detector's own parser, which accepts what these schemas describe and a little more (numbers for
nvidia-smi readings, extra keys); every rejection names the record index and the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from secml.abp.features import FEATURES, UNITS
from secml.dfp.schema import DUO_RESULTS

_NUMBER = r"[0-9]{1,5}(\.[0-9]{1,2})?"
_DAYS = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
NVSMI_TIME = (
    rf"^({_DAYS}) ({_MONTHS}) (0[1-9]|1[0-9]|2[0-8]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9] "
    r"20[0-9]{2}$"
)
_OPEN = ConfigDict(extra="allow")


def _reading(name: str, unit: str) -> Any:
    """The schema of one nvidia-smi reading: '<number> <unit>' or 'N/A'."""
    return (
        str | None,
        Field(
            None,
            alias=name,
            pattern=rf"^({_NUMBER} {unit}|N/A)$",
            description=f"as nvidia-smi prints it: '<number> {unit}' or 'N/A'",
        ),
    )


NvsmiRecord: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "NvsmiRecord",
    __config__=ConfigDict(extra="allow", populate_by_name=True),
    __doc__="One flattened nvidia-smi record (keys as nvidia-smi -q -x nests them, dotted).",
    **{
        f"f{j}": _reading(name, unit)
        for j, (name, unit) in enumerate(zip(FEATURES, UNITS, strict=True))
    },
    uuid=(
        str | None,
        Field(
            None,
            alias="nvidia_smi_log.gpu.uuid",
            min_length=1,
            max_length=64,
            description="GPU uuid (the 'user')",
        ),
    ),
    timestamp=(
        str | None,
        Field(
            None,
            alias="nvidia_smi_log.timestamp",
            pattern=NVSMI_TIME,
            description="e.g. 'Mon Nov 02 10:00:00 2026' (UTC)",
        ),
    ),
)


class _Open(BaseModel):
    model_config = _OPEN


class DuoLocation(_Open):
    """Where a Duo login came from."""

    city: str | None = None
    state: str | None = None
    country: str | None = None


class DuoAccessDevice(_Open):
    """The device that logged in."""

    browser: str | None = None
    os: str | None = None
    location: DuoLocation | None = None


class DuoUser(_Open):
    """The Duo user."""

    name: str = Field(
        min_length=1,
        max_length=128,
        description="longer names answer 422 if their model name "
        "(escaped, prefixed) exceeds 256 characters",
    )


class DuoNamed(_Open):
    """An object with a name (auth device, application)."""

    name: str | None = None


class DuoRecord(_Open):
    """One Duo authentication log record (Admin API v2)."""

    timestamp: int = Field(ge=0, le=9_000_000_000, description="epoch seconds")
    isotimestamp: str | None = None
    user: DuoUser
    result: Literal[tuple(sorted(DUO_RESULTS))]  # type: ignore[valid-type]
    reason: str | None = None
    access_device: DuoAccessDevice | None = None
    auth_device: DuoNamed | None = None
    application: DuoNamed | None = None


class AzureDeviceDetail(_Open):
    """The device of an Azure AD sign-in."""

    browser: str | None = None
    displayName: str | None = None  # noqa: N815 - Azure's key
    operatingSystem: str | None = None  # noqa: N815 - Azure's key


class AzureStatus(_Open):
    """Outcome of an Azure AD sign-in."""

    errorCode: int | None = None  # noqa: N815 - Azure's key
    failureReason: str | None = None  # noqa: N815 - Azure's key


class AzureLocation(_Open):
    """Where an Azure AD sign-in came from."""

    city: str | None = None
    countryOrRegion: str | None = None  # noqa: N815 - Azure's key


class AzureProperties(_Open):
    """The properties of an Azure AD sign-in."""

    userPrincipalName: str = Field(  # noqa: N815 - Azure's key
        min_length=1, max_length=128, description="as DuoUser.name"
    )
    appDisplayName: str | None = None  # noqa: N815 - Azure's key
    clientAppUsed: str | None = None  # noqa: N815 - Azure's key
    deviceDetail: AzureDeviceDetail | None = None  # noqa: N815 - Azure's key
    status: AzureStatus | None = None
    location: AzureLocation | None = None


class AzureRecord(_Open):
    """One Azure AD sign-in log record."""

    time: str = Field(
        pattern=r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):"
        r"[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]0[0-9]:00)?$",
        description="ISO 8601 (naive = UTC)",
    )
    properties: AzureProperties
    category: str | None = None


def _request(name: str, detector: str, source: str, record: type[BaseModel], doc: str) -> type:
    """The request body of one (detector, source)."""
    return create_model(  # type: ignore[call-overload]
        name,
        __doc__=doc,
        detector=(Literal[detector], Field(description="the detector")),  # type: ignore[valid-type]
        source=(Literal[source], Field(description="the data source")),  # type: ignore[valid-type]
        records=(
            list[record],  # type: ignore[valid-type]
            Field(min_length=1, description="raw records as they appear in the logs"),
        ),
    )


AbpRequest = _request("AbpRequest", "abp", "nvsmi", NvsmiRecord, "ABP on nvidia-smi records.")
DuoRequest = _request("DuoRequest", "dfp", "duo", DuoRecord, "DFP on Duo records.")
AzureRequest = _request("AzureRequest", "dfp", "azure", AzureRecord, "DFP on Azure AD records.")
REQUESTS: tuple[type[BaseModel], ...] = (AbpRequest, DuoRequest, AzureRequest)


class TopFeature(BaseModel):
    """One feature behind a DFP score."""

    feature: str
    z: float
    value: Any = None
    expected: Any = None


class RecordResult(BaseModel):
    """The answer for one record."""

    index: int
    event_id: str
    score: float = Field(
        description="ABP: P(mining); DFP: calibrated risk (mean_abs_z if the model has none)"
    )
    anomaly: bool
    decision: str = Field(description="abp: mining|benign; dfp: anomalous|normal")
    model: str = Field(description="registered model that scored the record")
    version: str = Field(description="registered model version")
    model_version: str = Field(description="<model>:<version>")
    top_features: list[TopFeature] | None = Field(
        default=None, description="DFP: features with the largest z-scores"
    )
    details: dict[str, Any] = Field(default_factory=dict)
    detection_id: int | None = Field(default=None, description="id in the detections store")


class PredictResponse(BaseModel):
    """Per-record answers of one /predict call."""

    detector: str
    source: str
    n_records: int
    n_anomalies: int
    results: list[RecordResult]


class ErrorDetail(BaseModel):
    """One validation error: where (body, records, index, field) and what is wrong."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrors(BaseModel):
    """422: every problem found, each naming its place."""

    detail: list[ErrorDetail] | str


class Problem(BaseModel):
    """An error answer with a message (and, for 404, what is known)."""

    detail: str | dict[str, Any]

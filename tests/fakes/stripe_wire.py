"""Stripe's v1 wire format as the official SDK speaks it, for the local Stripe stand-in.

Requests are form-encoded with bracket notation (``metadata[org_id]=x``, ``line_items[0][price]=y``,
``expand[]=z``); errors are ``{"error": {"type", "message", "param", "code", "doc_url"}}``; lists are
``{"object": "list", "data", "has_more", "url"}``. Unknown parameters are refused the way Stripe refuses
them, checked against the parameter types the installed SDK ships (``stripe.params``).
"""

from __future__ import annotations

import calendar
import re
import secrets
import string
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from stripe._request_options import RequestOptions
from typing_extensions import is_typeddict

Params = dict[str, Any]
Obj = dict[str, Any]

_ALPHABET = string.ascii_letters + string.digits
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
# Maps whose keys are the caller's own: never turned into lists, never checked against a schema.
_FREE_FORM = frozenset({"metadata", "payload"})
_OPTION_KEYS = frozenset(RequestOptions.__annotations__)


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


class StripeError(Exception):
    """An error answered in Stripe's shape; ``headers`` go out with it (e.g. ``Stripe-Should-Retry``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> Obj:
        error: Obj = {"type": self.type, "message": self.message}
        if self.param is not None:
            error["param"] = self.param
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://docs.stripe.com/error-codes/{self.code.replace('_', '-')}"
        return {"error": error}


def missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", param=param, code="parameter_missing")


def invalid(param: str | None, message: str, code: str | None = None) -> StripeError:
    return StripeError(400, message, param=param, code=code)


def no_such(kind: str, object_id: str, param: str, status: int = 400) -> StripeError:
    return StripeError(status, f"No such {kind}: '{object_id}'", param=param, code="resource_missing")


# --- request decoding ---------------------------------------------------------------------------


def decode_form(raw: str) -> Params:
    """``a[b][0][c]=1&e[]=x&e[]=y`` -> ``{"a": {"b": [{"c": "1"}]}, "e": ["x", "y"]}``; values stay strings."""
    root: Params = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = _KEY.fullmatch(key)
        if match is None:
            raise invalid(key, f"Invalid parameter name: {key}")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node = root
        for i, part in enumerate(parts):
            name = part if part != "" else str(len(node))  # `x[]` appends
            if i == len(parts) - 1:
                if isinstance(node.get(name), dict):
                    raise invalid(key, f"Invalid value for {key}: a hash was already given for it")
                node[name] = value
                break
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise invalid(key, f"Invalid hash for {key}: a plain value was already given for it")
            node = child
    return _listify(root)


def _listify(node: Params, free_form: bool = False) -> Any:
    out = {k: _listify(v, k in _FREE_FORM) if isinstance(v, dict) else v for k, v in node.items()}
    if not free_form and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def check_params(params: Params, schema: type, prefix: str = "") -> None:
    """Refuse parameters the SDK's own params type for this endpoint does not declare, as Stripe does."""
    fields = _fields(schema)
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in fields:
            raise StripeError(400, f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
        nested = fields[key]
        if nested is None:
            continue
        if isinstance(value, dict):
            check_params(value, nested, name)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    check_params(item, nested, f"{name}[{i}]")


@cache
def _fields(schema: type) -> dict[str, type | None]:
    """Field name -> the nested params type to check its value against (None: a leaf or a free-form map)."""
    module = sys.modules[schema.__module__]
    fields: dict[str, type | None] = {}
    for name, annotation in schema.__annotations__.items():
        if name in _OPTION_KEYS:
            continue
        text = repr(annotation)
        nested: type | None = None
        if "Dict[" not in text and "UntypedStripeObject" not in text:
            for ref in re.findall(r"\b([A-Z]\w*Params\w*)\b", text):
                candidate = getattr(module, ref, None)
                if isinstance(candidate, type) and is_typeddict(candidate):
                    nested = candidate
                    break
        fields[name] = nested
    return fields


# --- typed reads of form values -----------------------------------------------------------------


def get_str(params: Params, name: str, *, required: bool = False, label: str | None = None) -> str | None:
    value = params.get(name)
    label = label or name
    if value is None or value == "":
        if required:
            raise missing(label)
        return None
    if not isinstance(value, str):
        raise invalid(label, f"Invalid string: {label} must be a string")
    return value


def get_int(
    params: Params,
    name: str,
    *,
    required: bool = False,
    label: str | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int | None:
    raw = get_str(params, name, required=required, label=label)
    label = label or name
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid(label, f"Invalid integer: {raw}", "parameter_invalid_integer") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise invalid(label, f"Invalid {label}: must be {bounds}")
    return value


def get_bool(params: Params, name: str, *, label: str | None = None) -> bool | None:
    raw = get_str(params, name, label=label)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise invalid(label or name, f"Invalid boolean: {raw}")
    return raw == "true"


def get_decimal(params: Params, name: str, *, label: str | None = None, places: int = 12) -> Decimal | None:
    raw = get_str(params, name, label=label)
    label = label or name
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise invalid(label, f"Invalid decimal: {raw}", "parameter_invalid_string_decimal") from None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or value < 0 or -exponent > places:
        raise invalid(label, f"Invalid decimal: {raw}; must be non-negative with at most {places} decimal places")
    return value


def one_of(
    params: Params,
    name: str,
    choices: tuple[str, ...],
    *,
    default: str | None = None,
    required: bool = False,
    label: str | None = None,
) -> str | None:
    label = label or name
    value = get_str(params, name, required=required, label=label)
    if value is None:
        return default
    if value not in choices:
        listed = choices[0] if len(choices) == 1 else ", ".join(choices[:-1]) + f", or {choices[-1]}"
        raise invalid(label, f"Invalid {label}: must be one of {listed}")
    return value


def get_dict(params: Params, name: str, *, required: bool = False, label: str | None = None) -> Params:
    value = params.get(name)
    label = label or name
    if value is None or value == "":
        if required:
            raise missing(label)
        return {}
    if not isinstance(value, dict):
        raise invalid(label, f"Invalid object: {label} must be a hash")
    return value


def get_map(params: Params, name: str) -> dict[str, str]:
    """A free-form string map (``metadata``); ``""`` means empty."""
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(name, f"Invalid object: {name} must be a map of strings")
    return dict(value)


def merge_metadata(current: dict[str, str], update: Any) -> dict[str, str]:
    """Stripe's metadata update: keys merge, a key set to ``""`` is removed, ``metadata=""`` clears all."""
    if update == "":
        return {}
    merged = dict(current)
    for key, value in get_map({"metadata": update}, "metadata").items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def get_list(params: Params, name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        raise invalid(name, f"Invalid array: {name} must be an array")
    return value


# --- list responses ---------------------------------------------------------------------------


def list_page(url: str, items: list[Obj], params: Params, kind: str) -> Obj:
    """One page of ``items`` (already in Stripe's order) honouring limit / starting_after / ending_before."""
    limit = get_int(params, "limit", minimum=1, maximum=100) or 10
    after = get_str(params, "starting_after")
    before = get_str(params, "ending_before")
    ids = [item.get("id") for item in items]
    if after is not None:
        if after not in ids:
            raise no_such(kind, after, "starting_after")
        start = ids.index(after) + 1
        data, has_more = items[start : start + limit], start + limit < len(items)
    elif before is not None:
        if before not in ids:
            raise no_such(kind, before, "ending_before")
        end = ids.index(before)
        data, has_more = items[max(0, end - limit) : end], end - limit > 0
    else:
        data, has_more = items[:limit], limit < len(items)
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


# --- calendar arithmetic for billing periods ----------------------------------------------------


def add_interval(ts: int, interval: str, count: int, anchor_day: int | None = None) -> int:
    """``ts`` moved forward by ``count`` days/weeks/months/years (UTC); month ends clamp like Stripe's."""
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    moment = datetime.fromtimestamp(ts, UTC)
    months = count * (12 if interval == "year" else 1)
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(anchor_day or moment.day, calendar.monthrange(year, month0 + 1)[1])
    return int(moment.replace(year=year, month=month0 + 1, day=day).timestamp())


def next_anchor(now: int, day_of_month: int, hour: int | None, minute: int | None, second: int | None) -> int:
    """The first moment after ``now`` on ``day_of_month`` (clamped to the month's length) at the given time."""
    moment = datetime.fromtimestamp(now, UTC)
    year, month = moment.year, moment.month
    for _ in range(3):
        day = min(day_of_month, calendar.monthrange(year, month)[1])
        candidate = moment.replace(
            year=year,
            month=month,
            day=day,
            hour=moment.hour if hour is None else hour,
            minute=moment.minute if minute is None else minute,
            second=moment.second if second is None else second,
        )
        if candidate.timestamp() > now:
            return int(candidate.timestamp())
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: an anchor day recurs every month")

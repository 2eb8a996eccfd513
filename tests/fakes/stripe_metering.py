"""Meters, meter events and meter event summaries for the local Stripe stand-in (see ``stripe_state``).

Meter events are validated as Stripe's synchronous v1 endpoint does (an active meter for ``event_name``,
the customer and value keys in ``payload``, a whole-number value, a timestamp within the past 35 days and
at most 5 minutes ahead) and deduplicated by ``identifier``: a reused identifier is refused with 400
``An event already exists with identifier <id>.`` and ``Stripe-Should-Retry: false``, as Stripe does.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from tests.fakes.stripe_state import Store
from tests.fakes.stripe_wire import (
    Obj,
    Params,
    StripeError,
    get_dict,
    get_int,
    get_map,
    get_str,
    invalid,
    list_page,
    missing,
    one_of,
)

EVENT_WINDOW_PAST_S = 35 * 86400  # meter events: at most 35 days old ...
EVENT_WINDOW_FUTURE_S = 5 * 60  # ... and at most 5 minutes ahead
MAX_VALUE_DIGITS = 15


class Metering:
    """Meters, and the ledger of accepted meter events (in arrival order, with the meter each counts for)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.meter_events: list[tuple[str, Obj]] = []  # (meter id, billing.meter_event)
        self.identifiers: dict[str, int] = {}  # meter-event identifier -> when first accepted
        # Stripe aggregates asynchronously: summaries leave out events accepted in the last `lag_s` seconds.
        self.lag_s = 0

    # --- meters and meter events -------------------------------------------------------------

    def create_meter(self, p: Params) -> Obj:
        display_name = get_str(p, "display_name", required=True)
        event_name = get_str(p, "event_name", required=True)
        aggregation = get_dict(p, "default_aggregation", required=True)
        formula = one_of(
            aggregation, "formula", ("count", "last", "sum"), required=True, label="default_aggregation[formula]"
        )
        mapping = get_dict(p, "customer_mapping")
        customer_key = get_str(
            mapping, "event_payload_key", required=bool(mapping), label="customer_mapping[event_payload_key]"
        )
        one_of(mapping, "type", ("by_id",), required=bool(mapping), label="customer_mapping[type]")
        settings = get_dict(p, "value_settings")
        value_key = get_str(
            settings, "event_payload_key", required=bool(settings), label="value_settings[event_payload_key]"
        )
        if self._active_meter(event_name or "") is not None:
            raise invalid("event_name", f"An active meter with event_name `{event_name}` already exists.")
        return self.store.new(
            "mtr_test_",
            "billing.meter",
            32,
            customer_mapping={"event_payload_key": customer_key or "stripe_customer_id", "type": "by_id"},
            default_aggregation={"formula": formula},
            display_name=display_name,
            event_name=event_name,
            event_time_window=one_of(p, "event_time_window", ("day", "hour")),
            status="active",
            status_transitions={"deactivated_at": None},
            updated=self.store.now(),
            value_settings={"event_payload_key": value_key or "value"},
        )

    def update_meter(self, meter_id: str, p: Params) -> Obj:
        meter = self.store.require("meter", "billing.meter", meter_id, "id", 404)
        if "display_name" in p:
            meter["display_name"] = get_str(p, "display_name", required=True)
            meter["updated"] = self.store.now()
        return meter

    def set_meter_status(self, meter_id: str, active: bool) -> Obj:
        meter = self.store.require("meter", "billing.meter", meter_id, "id", 404)
        if active and self._active_meter(meter["event_name"]) not in (None, meter):
            raise invalid(None, f"An active meter with event_name `{meter['event_name']}` already exists.")
        meter["status"] = "active" if active else "inactive"
        meter["status_transitions"]["deactivated_at"] = None if active else self.store.now()
        meter["updated"] = self.store.now()
        return meter

    def list_meters(self, p: Params) -> Obj:
        status = one_of(p, "status", ("active", "inactive"))
        return self.store.page(
            "billing.meter", "/v1/billing/meters", p, "meter", lambda m: status is None or m["status"] == status
        )

    def _active_meter(self, event_name: str) -> Obj | None:
        return next(
            (
                m
                for m in self.store.of_type("billing.meter")
                if m["event_name"] == event_name and m["status"] == "active"
            ),
            None,
        )

    def create_meter_event(self, p: Params) -> Obj:
        now = self.store.now()
        event_name = get_str(p, "event_name", required=True) or ""
        meter = self._active_meter(event_name)
        if meter is None:
            raise invalid("event_name", f"No active meter found for event_name {event_name}.")
        payload = get_map(p, "payload")
        if not payload:
            raise missing("payload")
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not customer_id:
            raise invalid(
                f"payload[{customer_key}]",
                f"Customer mapping key {customer_key} not found in payload.",
                "meter_event_no_customer_defined",
            )
        customer = self.store.objects.get(customer_id)
        if customer is None or customer["object"] != "customer" or customer.get("deleted"):
            raise invalid(
                f"payload[{customer_key}]", f"No such customer: '{customer_id}'", "meter_event_customer_not_found"
            )
        raw = payload.get(value_key)
        if raw is None or raw == "":
            raise invalid(
                f"payload[{value_key}]", f"Value key {value_key} not found in payload.", "meter_event_value_not_found"
            )
        if not re.fullmatch(r"-?\d+", raw):
            raise invalid(
                f"payload[{value_key}]",
                f"The value in the event payload must be a whole number. Received {raw}.",
                "meter_event_invalid_value",
            )
        if len(raw.lstrip("-").lstrip("0")) > MAX_VALUE_DIGITS:
            raise invalid(
                f"payload[{value_key}]",
                f"The value in the event payload can have at most {MAX_VALUE_DIGITS} digits. Received {raw}.",
                "meter_event_value_too_many_digits",
            )
        timestamp = get_int(p, "timestamp")
        timestamp = now if timestamp is None else timestamp
        if timestamp < now - EVENT_WINDOW_PAST_S:
            raise invalid(
                "timestamp",
                "The timestamp of the event must be within the past 35 calendar days.",
                "timestamp_too_far_in_past",
            )
        if timestamp > now + EVENT_WINDOW_FUTURE_S:
            raise invalid(
                "timestamp", "The timestamp of the event can be at most 5 minutes in the future.", "timestamp_in_future"
            )
        identifier = get_str(p, "identifier") or str(uuid.uuid4())
        if len(identifier) > 100:
            raise invalid("identifier", "Invalid identifier: must be at most 100 characters")
        if identifier in self.identifiers:
            # What Stripe answers for a reused identifier (a new request, not an idempotent replay).
            raise StripeError(
                400, f"An event already exists with identifier {identifier}.", headers={"Stripe-Should-Retry": "false"}
            )
        event: Obj = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": timestamp,
        }
        self.identifiers[identifier] = now
        self.meter_events.append((meter["id"], event))
        return event

    def aggregate(
        self, meter: Obj, customer_id: str, start: int, end: int, *, accepted_by: int | None = None
    ) -> float | None:
        """The meter's formula over the customer's events with ``start <= timestamp < end`` (and, with
        ``accepted_by``, only those accepted by then); None if there are none."""
        key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        # (timestamp, arrival, value): `last` is the latest timestamp, ties going to the later arrival.
        events = [
            (e["timestamp"], arrival, int(e["payload"][value_key]))
            for arrival, (meter_id, e) in enumerate(self.meter_events)
            if meter_id == meter["id"]
            and e["payload"].get(key) == customer_id
            and start <= e["timestamp"] < end
            and (accepted_by is None or e["created"] <= accepted_by)
        ]
        if not events:
            return None
        formula = meter["default_aggregation"]["formula"]
        if formula == "count":
            return float(len(events))
        if formula == "last":
            return float(max(events)[2])
        return float(sum(value for _, _, value in events))

    def list_event_summaries(self, meter_id: str, p: Params) -> Obj:
        meter = self.store.require("meter", "billing.meter", meter_id, "id", 404)
        customer_id = get_str(p, "customer", required=True) or ""
        self.store.require("customer", "customer", customer_id, "customer")
        start = get_int(p, "start_time", required=True) or 0
        end = get_int(p, "end_time", required=True) or 0
        window = one_of(p, "value_grouping_window", ("day", "hour"))
        step = {"hour": 3600, "day": 86400}.get(window or "", 60)
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise invalid(name, f"The {name} must be aligned with minute boundaries.")
            if window is not None and value % step:
                raise invalid(
                    name, f"The {name} must be aligned with {window} boundaries for value_grouping_window={window}."
                )
        if start >= end:
            raise invalid("start_time", "The start_time must be before the end_time.")
        windows = [(s, min(s + step, end)) for s in range(start, end, step)] if window else [(start, end)]
        summaries = []
        for w_start, w_end in windows:
            aggregated = self.aggregate(meter, customer_id, w_start, w_end, accepted_by=self.store.now() - self.lag_s)
            if aggregated is None:
                continue  # windows without events are left out
            digest = hashlib.sha256(f"{meter_id}:{customer_id}:{w_start}:{w_end}".encode()).hexdigest()[:48]
            summaries.append(
                {
                    "id": f"mtrusg_test_{digest}",
                    "object": "billing.meter_event_summary",
                    "aggregated_value": aggregated,
                    "end_time": w_end,
                    "livemode": False,
                    "meter": meter_id,
                    "start_time": w_start,
                }
            )
        summaries.reverse()  # latest window first
        return list_page(f"/v1/billing/meters/{meter_id}/event_summaries", summaries, p, "meter event summary")

"""The in-memory Stripe test-mode account behind the local Stripe stand-in, part one: storage and events
(:class:`Store`) and the catalog (:class:`Catalog`: customers, payment methods, products, prices).
Meters and meter events are in ``stripe_metering``; checkout, subscriptions and invoices in ``stripe_billing``.

Objects are shaped as API version 2026-10-28 (stripe-python 16.1) returns them. Each public
``create_*``/``update_*``/``list_*`` method takes decoded form params and returns the response object,
or raises :class:`StripeError`. The HTTP layer (``stripe_server``) holds the lock around all of them.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.fakes.stripe_wire import (
    Obj,
    Params,
    get_bool,
    get_decimal,
    get_dict,
    get_int,
    get_list,
    get_map,
    get_str,
    invalid,
    list_page,
    merge_metadata,
    missing,
    new_id,
    no_such,
    one_of,
)


class Store:
    """Every object by id; insertion order is creation order."""

    def __init__(self, clock: Callable[[], int], api_version: str) -> None:
        self.now = clock
        self.api_version = api_version
        self.objects: dict[str, Obj] = {}

    # --- storage ---------------------------------------------------------------------------

    def new(self, prefix: str, object_type: str, length: int = 24, **fields: Any) -> Obj:
        obj: Obj = {"id": new_id(prefix, length), "object": object_type, "created": self.now(), "livemode": False}
        obj.update(fields)
        self.objects[obj["id"]] = obj
        return obj

    def require(self, kind: str, object_type: str, object_id: str, param: str, status: int = 400) -> Obj:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != object_type or obj.get("deleted"):
            raise no_such(kind, object_id, param, status)
        return obj

    def retrieve(self, kind: str, object_type: str, object_id: str) -> Obj:
        obj = self.objects.get(object_id)
        if obj is None or obj["object"] != object_type:
            raise no_such(kind, object_id, "id", 404)
        return obj

    def of_type(self, object_type: str) -> list[Obj]:
        """Newest first, as Stripe lists."""
        return [o for o in reversed(self.objects.values()) if o["object"] == object_type and not o.get("deleted")]

    def page(self, object_type: str, url: str, params: Params, kind: str, keep: Callable[[Obj], bool]) -> Obj:
        return list_page(url, [o for o in self.of_type(object_type) if keep(o)], params, kind)

    # --- events --------------------------------------------------------------------------------

    def new_event(self, event_type: str, obj: Obj, previous_attributes: Obj | None = None) -> Obj:
        data: Obj = {"object": copy.deepcopy(obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = copy.deepcopy(previous_attributes)
        return self.new(
            "evt_",
            "event",
            api_version=self.api_version,
            data=data,
            pending_webhooks=1,
            request={"id": None, "idempotency_key": None},
            type=event_type,
        )

    def list_events(self, p: Params) -> Obj:
        kind = get_str(p, "type")
        types = set(get_list(p, "types"))
        return self.page(
            "event",
            "/v1/events",
            p,
            "event",
            lambda e: (kind is None or e["type"] == kind) and (not types or e["type"] in types),
        )


class Catalog:
    """Customers (and the cards saved on them), products and prices."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- customers -------------------------------------------------------------------------

    def create_customer(self, p: Params) -> Obj:
        customer = self.store.new(
            "cus_",
            "customer",
            14,
            address=get_dict(p, "address") or None,
            balance=0,
            currency=None,
            default_source=None,
            delinquent=False,
            description=get_str(p, "description"),
            discount=None,
            email=get_str(p, "email"),
            invoice_prefix=uuid.uuid4().hex[:8].upper(),
            invoice_settings={
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            metadata=get_map(p, "metadata"),
            name=get_str(p, "name"),
            next_invoice_sequence=1,
            phone=get_str(p, "phone"),
            preferred_locales=get_list(p, "preferred_locales"),
            shipping=None,
            tax_exempt=one_of(p, "tax_exempt", ("exempt", "none", "reverse"), default="none"),
            test_clock=None,
        )
        self._set_default_payment_method(customer, p)
        return customer

    def update_customer(self, customer_id: str, p: Params) -> Obj:
        customer = self.store.require("customer", "customer", customer_id, "id", 404)
        for field in ("email", "name", "description", "phone"):
            if field in p:
                customer[field] = get_str(p, field)
        if "metadata" in p:
            customer["metadata"] = merge_metadata(customer["metadata"], p["metadata"])
        if "address" in p:
            customer["address"] = get_dict(p, "address") or None
        if "preferred_locales" in p:
            customer["preferred_locales"] = get_list(p, "preferred_locales")
        self._set_default_payment_method(customer, p)
        return customer

    def _set_default_payment_method(self, customer: Obj, p: Params) -> None:
        settings = get_dict(p, "invoice_settings")
        if "default_payment_method" not in settings:
            return
        label = "invoice_settings[default_payment_method]"
        pm_id = get_str(settings, "default_payment_method", label=label)
        if pm_id is not None:
            pm = self.store.require("PaymentMethod", "payment_method", pm_id, label)
            if pm["customer"] != customer["id"]:
                raise invalid(label, f"The PaymentMethod {pm_id} is not attached to customer {customer['id']}.")
        customer["invoice_settings"]["default_payment_method"] = pm_id

    def delete_customer(self, customer_id: str) -> Obj:
        self.store.require("customer", "customer", customer_id, "id", 404)
        stub = {"id": customer_id, "object": "customer", "deleted": True}
        self.store.objects[customer_id] = stub
        return stub

    def list_customers(self, p: Params) -> Obj:
        email = get_str(p, "email")
        return self.store.page(
            "customer", "/v1/customers", p, "customer", lambda c: email is None or c["email"] == email
        )

    def attach_payment_method(self, customer_id: str) -> Obj:
        """A card saved on the customer (what Checkout in setup mode leaves behind)."""
        customer = self.store.require("customer", "customer", customer_id, "customer")
        year = datetime.fromtimestamp(self.store.now(), UTC).year + 3
        return self.store.new(
            "pm_",
            "payment_method",
            billing_details={"email": customer["email"], "name": customer["name"]},
            card={
                "brand": "visa",
                "country": "US",
                "exp_month": 12,
                "exp_year": year,
                "funding": "credit",
                "last4": "4242",
            },
            customer=customer_id,
            metadata={},
            type="card",
        )

    # --- products and prices -----------------------------------------------------------------

    def create_product(self, p: Params, label: str = "name") -> Obj:
        now = self.store.now()
        return self.store.new(
            "prod_",
            "product",
            14,
            active=get_bool(p, "active") is not False,
            default_price=None,
            description=get_str(p, "description"),
            images=get_list(p, "images"),
            marketing_features=[],
            metadata=get_map(p, "metadata"),
            name=get_str(p, "name", required=True, label=label),
            package_dimensions=None,
            shippable=None,
            statement_descriptor=get_str(p, "statement_descriptor"),
            tax_code=get_str(p, "tax_code"),
            type="service",
            unit_label=get_str(p, "unit_label"),
            updated=now,
            url=get_str(p, "url"),
        )

    def list_products(self, p: Params) -> Obj:
        active = get_bool(p, "active")
        return self.store.page(
            "product", "/v1/products", p, "product", lambda o: active is None or o["active"] == active
        )

    def create_price(self, p: Params) -> Obj:
        currency = (get_str(p, "currency", required=True) or "").lower()
        product_id = get_str(p, "product")
        if product_id is not None and "product_data" in p:
            raise invalid("product", "You may only specify one of these parameters: product, product_data.")
        if product_id is not None:
            self.store.require("product", "product", product_id, "product")
        elif "product_data" in p:
            product_id = self.create_product(get_dict(p, "product_data"), "product_data[name]")["id"]
        else:
            raise invalid("product", "You must specify either `product` or `product_data` when creating a price.")
        if one_of(p, "billing_scheme", ("per_unit", "tiered"), default="per_unit") == "tiered":
            raise invalid("billing_scheme", "The local Stripe stand-in models per_unit prices only.")
        unit_amount = get_int(p, "unit_amount", minimum=0)
        decimal = get_decimal(p, "unit_amount_decimal")
        if unit_amount is not None and decimal is not None:
            raise invalid(
                "unit_amount", "You may only specify one of these parameters: unit_amount, unit_amount_decimal."
            )
        if unit_amount is None and decimal is None:
            raise missing("unit_amount")
        if decimal is None:
            decimal = Decimal(unit_amount or 0)
        elif decimal == decimal.to_integral_value():
            unit_amount = int(decimal)
        lookup_key = get_str(p, "lookup_key")
        if lookup_key is not None and not get_bool(p, "transfer_lookup_key"):
            holder = next((o for o in self.store.of_type("price") if o["lookup_key"] == lookup_key), None)
            if holder is not None:
                raise invalid("lookup_key", f"A price (`{holder['id']}`) already uses that lookup key.")
        recurring = self._recurring(get_dict(p, "recurring")) if "recurring" in p else None
        return self.store.new(
            "price_",
            "price",
            active=get_bool(p, "active") is not False,
            billing_scheme="per_unit",
            currency=currency,
            custom_unit_amount=None,
            lookup_key=lookup_key,
            metadata=get_map(p, "metadata"),
            nickname=get_str(p, "nickname"),
            product=product_id,
            recurring=recurring,
            tax_behavior=one_of(p, "tax_behavior", ("exclusive", "inclusive", "unspecified"), default="unspecified"),
            tiers_mode=None,
            transform_quantity=None,
            type="recurring" if recurring else "one_time",
            unit_amount=unit_amount,
            unit_amount_decimal=str(decimal),
        )

    def _recurring(self, r: Params) -> Obj:
        interval = one_of(r, "interval", ("day", "week", "month", "year"), required=True, label="recurring[interval]")
        usage_type = one_of(r, "usage_type", ("licensed", "metered"), default="licensed", label="recurring[usage_type]")
        meter_id = get_str(r, "meter", label="recurring[meter]")
        if usage_type == "metered" and meter_id is None:
            raise missing("recurring[meter]")
        if meter_id is not None:
            if usage_type != "metered":
                raise invalid("recurring[meter]", "A meter can only be set on prices with `usage_type=metered`.")
            self.store.require("meter", "billing.meter", meter_id, "recurring[meter]")
        return {
            "interval": interval,
            "interval_count": get_int(r, "interval_count", minimum=1, label="recurring[interval_count]") or 1,
            "meter": meter_id,
            "trial_period_days": get_int(r, "trial_period_days", minimum=0, label="recurring[trial_period_days]"),
            "usage_type": usage_type,
        }

    def list_prices(self, p: Params) -> Obj:
        active, product = get_bool(p, "active"), get_str(p, "product")
        kind = one_of(p, "type", ("one_time", "recurring"))
        keys = set(get_list(p, "lookup_keys"))
        return self.store.page(
            "price",
            "/v1/prices",
            p,
            "price",
            lambda o: (
                (active is None or o["active"] == active)
                and (product is None or o["product"] == product)
                and (kind is None or o["type"] == kind)
                and (not keys or o["lookup_key"] in keys)
            ),
        )

"""Checkout sessions, the billing portal, subscriptions, invoice items and invoices for the local Stripe
stand-in (see ``stripe_state``).

Invoices are computed, not canned: metered items bill the meter's aggregate over the period that ended at
``unit_amount_decimal`` (rounded half up to whole cents), licensed items bill in advance (prorated up to a
billing-cycle anchor), and pending invoice items are pulled in. What a customer does outside the API
(finishing Checkout, a payment succeeding or failing) is driven by the ``StripeFake`` control methods.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tests.fakes.stripe_metering import Metering
from tests.fakes.stripe_state import Catalog, Store
from tests.fakes.stripe_wire import (
    Obj,
    Params,
    add_interval,
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_map,
    get_str,
    invalid,
    merge_metadata,
    missing,
    new_id,
    next_anchor,
    no_such,
    one_of,
)

RETRY_AFTER_FAILURE_S = 3 * 86400
MAX_PAYMENT_ATTEMPTS = 4


def _cents(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Billing:
    def __init__(self, store: Store, catalog: Catalog, metering: Metering) -> None:
        self.store = store
        self.catalog = catalog
        self.metering = metering
        self._session_lines: dict[str, list[tuple[str, int | None]]] = {}
        self._session_sub_metadata: dict[str, dict[str, str]] = {}

    # --- checkout and the billing portal -------------------------------------------------------

    def create_checkout_session(self, p: Params) -> Obj:
        mode = one_of(p, "mode", ("payment", "setup", "subscription"), required=True)
        customer_id = get_str(p, "customer")
        if customer_id is not None:
            self.store.require("customer", "customer", customer_id, "customer")
        customer_email = get_str(p, "customer_email")
        if customer_id is not None and customer_email is not None:
            raise invalid("customer_email", "You may only specify one of these parameters: customer, customer_email.")
        lines = self._checkout_lines(get_list(p, "line_items"), mode or "")
        prices = [self.store.objects[price_id] for price_id, _ in lines]
        currencies = {price["currency"] for price in prices}
        if len(currencies) > 1:
            raise invalid("line_items", "All line items must use the same currency.")
        amount = sum((price["unit_amount"] or 0) * (qty or 0) for price, (_, qty) in zip(prices, lines, strict=True))
        ui_mode = one_of(p, "ui_mode", ("elements", "embedded_page", "form", "hosted_page"), default="hosted_page")
        setup_intent = None
        if mode == "setup":
            setup_intent = self.store.new(
                "seti_",
                "setup_intent",
                cancellation_reason=None,
                customer=customer_id,
                description=None,
                last_setup_error=None,
                metadata=get_map(get_dict(p, "setup_intent_data"), "metadata"),
                payment_method=None,
                payment_method_types=["card"],
                status="requires_payment_method",
                usage="off_session",
            )
            setup_intent["client_secret"] = f"{setup_intent['id']}_secret_{new_id('', 24)}"
        session = self.store.new(
            "cs_test_",
            "checkout.session",
            58,
            amount_subtotal=None if mode == "setup" else amount,
            amount_total=None if mode == "setup" else amount,
            cancel_url=get_str(p, "cancel_url"),
            client_reference_id=get_str(p, "client_reference_id"),
            client_secret=None,
            currency=next(iter(currencies), None) or (get_str(p, "currency") or "").lower() or None,
            customer=customer_id,
            customer_creation=None if customer_id else ("if_required" if mode == "payment" else "always"),
            customer_details=None,
            customer_email=customer_email,
            expires_at=get_int(p, "expires_at") or self.store.now() + 86400,
            invoice=None,
            locale=get_str(p, "locale"),
            metadata=get_map(p, "metadata"),
            mode=mode,
            payment_intent=None,
            payment_link=None,
            payment_method_types=get_list(p, "payment_method_types") or ["card"],
            payment_status="no_payment_required" if mode == "setup" else "unpaid",
            return_url=get_str(p, "return_url"),
            setup_intent=setup_intent["id"] if setup_intent else None,
            status="open",
            subscription=None,
            success_url=get_str(p, "success_url"),
            total_details=None if mode == "setup" else {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            ui_mode=ui_mode,
        )
        session_id = session["id"]
        if ui_mode == "hosted_page":
            session["url"] = f"https://checkout.stripe.com/c/pay/{session_id}"
        else:
            session["url"] = None
            session["client_secret"] = f"{session_id}_secret_{new_id('', 24)}"
        self._session_lines[session_id] = lines
        self._session_sub_metadata[session_id] = get_map(get_dict(p, "subscription_data"), "metadata")
        return session

    def _checkout_lines(self, items: list[Any], mode: str) -> list[tuple[str, int | None]]:
        if mode == "setup":
            if items:
                raise invalid("line_items", "You can not pass `line_items` in `setup` mode.")
            return []
        if not items:
            raise missing("line_items")
        lines: list[tuple[str, int | None]] = []
        for i, item in enumerate(items):
            label = f"line_items[{i}]"
            if not isinstance(item, dict):
                raise invalid(label, f"Invalid object: {label} must be a hash")
            if "price_data" in item:
                raise invalid(f"{label}[price_data]", "The local Stripe stand-in takes line items by `price` only.")
            price_id = get_str(item, "price", required=True, label=f"{label}[price]") or ""
            price = self.store.require("price", "price", price_id, f"{label}[price]")
            lines.append((price_id, self._quantity(item, price, label)))
        recurring = [self.store.objects[price_id]["recurring"] is not None for price_id, _ in lines]
        if mode == "payment" and any(recurring):
            raise invalid(
                "line_items",
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode "
                "or use only one-time prices.",
            )
        if mode == "subscription" and not any(recurring):
            raise invalid("line_items", "You must provide at least one recurring price in `subscription` mode.")
        return lines

    @staticmethod
    def _quantity(item: Params, price: Obj, label: str) -> int | None:
        quantity = get_int(item, "quantity", minimum=0, label=f"{label}[quantity]")
        metered = (price["recurring"] or {}).get("usage_type") == "metered"
        if metered and quantity is not None:
            raise invalid(
                f"{label}[quantity]",
                f"Quantity should not be specified where usage_type is `metered`. Remove quantity from `{label}`.",
            )
        if not metered and quantity is None:
            raise missing(f"{label}[quantity]")
        return quantity

    def complete_checkout(self, session_id: str) -> Obj:
        """What happens when the customer finishes the hosted page: customer, card, subscription."""
        session = self.store.require("checkout.session", "checkout.session", session_id, "id")
        if session["status"] != "open":
            raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
        mode = session["mode"]
        customer_id = session["customer"]
        if customer_id is None and mode != "payment":  # payment mode leaves a guest without a customer
            email = session["customer_email"] or "buyer@example.com"
            customer_id = self.catalog.create_customer({"email": email})["id"]
        pm = self.catalog.attach_payment_method(customer_id) if customer_id else None
        if mode == "setup":
            intent = self.store.objects[session["setup_intent"]]
            intent.update(customer=customer_id, payment_method=pm["id"] if pm else None, status="succeeded")
        elif mode == "subscription":
            sub = self._new_subscription(
                self.store.objects[customer_id],
                [(self.store.objects[price_id], qty, {}) for price_id, qty in self._session_lines[session_id]],
                metadata=self._session_sub_metadata[session_id],
                default_payment_method=pm["id"] if pm else None,
            )
            session["subscription"] = sub["id"]
            session["invoice"] = sub["latest_invoice"]
        else:
            session["payment_intent"] = new_id("pi_")
        email = session["customer_email"] or (self.store.objects[customer_id]["email"] if customer_id else None)
        session.update(
            customer=customer_id,
            customer_details={"address": None, "email": email, "name": None, "phone": None, "tax_exempt": "none"},
            payment_status="paid" if (session["amount_total"] or 0) > 0 else "no_payment_required",
            status="complete",
        )
        return session

    def list_checkout_sessions(self, p: Params) -> Obj:
        customer, subscription = get_str(p, "customer"), get_str(p, "subscription")
        status = one_of(p, "status", ("complete", "expired", "open"))
        return self.store.page(
            "checkout.session",
            "/v1/checkout/sessions",
            p,
            "checkout.session",
            lambda o: (
                (customer is None or o["customer"] == customer)
                and (subscription is None or o["subscription"] == subscription)
                and (status is None or o["status"] == status)
            ),
        )

    def create_portal_session(self, p: Params) -> Obj:
        customer_id = get_str(p, "customer", required=True) or ""
        self.store.require("customer", "customer", customer_id, "customer")
        return self.store.new(
            "bps_",
            "billing_portal.session",
            configuration=get_str(p, "configuration") or "bpc_test_default",
            customer=customer_id,
            flow=None,
            locale=get_str(p, "locale"),
            on_behalf_of=None,
            return_url=get_str(p, "return_url"),
            url=f"https://billing.stripe.com/p/session/test_{new_id('', 32)}",
        )

    # --- subscriptions -----------------------------------------------------------------------

    def create_subscription(self, p: Params) -> Obj:
        customer = self.store.require("customer", "customer", get_str(p, "customer", required=True) or "", "customer")
        entries = get_list(p, "items")
        if not entries:
            raise missing("items")
        items = [self._subscription_item_params(entry, f"items[{i}]") for i, entry in enumerate(entries)]
        pm_id = get_str(p, "default_payment_method")
        if pm_id is not None:
            self.store.require("PaymentMethod", "payment_method", pm_id, "default_payment_method")
        anchor_config = get_dict(p, "billing_cycle_anchor_config")
        anchor = get_int(p, "billing_cycle_anchor")
        if anchor_config and anchor is not None:
            raise invalid(
                "billing_cycle_anchor",
                "You may only specify one of these parameters: billing_cycle_anchor, billing_cycle_anchor_config.",
            )
        if anchor is not None and anchor <= self.store.now():
            raise invalid("billing_cycle_anchor", "billing_cycle_anchor must be a timestamp in the future.")
        collection = one_of(
            p, "collection_method", ("charge_automatically", "send_invoice"), default="charge_automatically"
        )
        days_until_due = get_int(p, "days_until_due", minimum=0)
        if collection == "send_invoice" and days_until_due is None:
            raise missing("days_until_due")
        return self._new_subscription(
            customer,
            items,
            metadata=get_map(p, "metadata"),
            default_payment_method=pm_id,
            anchor_config=anchor_config,
            anchor=anchor,
            collection_method=collection or "charge_automatically",
            days_until_due=days_until_due,
            description=get_str(p, "description"),
            payment_behavior=one_of(
                p,
                "payment_behavior",
                ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"),
                default="allow_incomplete",
            ),
            trial_days=get_int(p, "trial_period_days", minimum=0),
        )

    def _subscription_item_params(self, entry: Any, label: str) -> tuple[Obj, int | None, dict[str, str]]:
        if not isinstance(entry, dict):
            raise invalid(label, f"Invalid object: {label} must be a hash")
        if "price_data" in entry:
            raise invalid(f"{label}[price_data]", "The local Stripe stand-in takes subscription items by `price` only.")
        price_id = get_str(entry, "price", required=True, label=f"{label}[price]") or ""
        price = self.store.require("price", "price", price_id, f"{label}[price]")
        if price["recurring"] is None:
            raise invalid(
                f"{label}[price]",
                "The price specified is set to `type=one_time` but this field only accepts prices with "
                "`type=recurring`.",
            )
        quantity = get_int(entry, "quantity", minimum=0, label=f"{label}[quantity]")
        if price["recurring"]["usage_type"] == "metered" and quantity is not None:
            raise invalid(
                f"{label}[quantity]",
                f"Quantity should not be specified where usage_type is `metered`. Remove quantity from `{label}`.",
            )
        return price, quantity, get_map(entry, "metadata")

    def _new_subscription(
        self,
        customer: Obj,
        items: list[tuple[Obj, int | None, dict[str, str]]],
        *,
        metadata: dict[str, str],
        default_payment_method: str | None,
        anchor_config: Params | None = None,
        anchor: int | None = None,
        collection_method: str = "charge_automatically",
        days_until_due: int | None = None,
        description: str | None = None,
        payment_behavior: str | None = "allow_incomplete",
        trial_days: int | None = None,
    ) -> Obj:
        now = self.store.now()
        recurrings = {(price["recurring"]["interval"], price["recurring"]["interval_count"]) for price, _, _ in items}
        if len(recurrings) > 1:
            raise invalid(
                "items",
                "All prices on a subscription must have the same `recurring.interval` and `recurring.interval_count`.",
            )
        if len({price["currency"] for price, _, _ in items}) > 1:
            raise invalid("items", "All prices on a subscription must have the same currency.")
        interval, count = recurrings.pop()
        config = None
        if anchor_config:
            label = "billing_cycle_anchor_config"
            config = {
                "day_of_month": get_int(
                    anchor_config, "day_of_month", required=True, minimum=1, maximum=31, label=f"{label}[day_of_month]"
                ),
                "hour": get_int(anchor_config, "hour", minimum=0, maximum=23, label=f"{label}[hour]"),
                "minute": get_int(anchor_config, "minute", minimum=0, maximum=59, label=f"{label}[minute]"),
                "month": get_int(anchor_config, "month", minimum=1, maximum=12, label=f"{label}[month]"),
                "second": get_int(anchor_config, "second", minimum=0, maximum=59, label=f"{label}[second]"),
            }
            anchor = next_anchor(now, config["day_of_month"] or 1, config["hour"], config["minute"], config["second"])
        trial_end = now + 86400 * trial_days if trial_days else None
        full_end = add_interval(now, interval, count)
        period_end = trial_end or anchor or full_end
        sub_id = new_id("sub_")
        sub_items = []
        for price, quantity, item_metadata in items:
            item: Obj = {
                "id": new_id("si_", 14),
                "object": "subscription_item",
                "billing_thresholds": None,
                "created": now,
                "current_period_end": period_end,
                "current_period_start": now,
                "discounts": [],
                "metadata": item_metadata,
                "price": copy.deepcopy(price),
                "subscription": sub_id,
                "tax_rates": [],
            }
            if price["recurring"]["usage_type"] != "metered":
                item["quantity"] = 1 if quantity is None else quantity
            sub_items.append(item)
        sub: Obj = {
            "id": sub_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": trial_end or anchor or now,
            "billing_cycle_anchor_config": config,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": collection_method,
            "created": now,
            "currency": items[0][0]["currency"],
            "customer": customer["id"],
            "days_until_due": days_until_due,
            "default_payment_method": default_payment_method,
            "default_source": None,
            "default_tax_rates": [],
            "description": description,
            "discounts": [],
            "ended_at": None,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": sub_items,
                "has_more": False,
                "total_count": len(sub_items),
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            "latest_invoice": None,
            "livemode": False,
            "metadata": metadata,
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": now,
            "status": "trialing" if trial_end else "active",
            "test_clock": None,
            "transfer_data": None,
            "trial_end": trial_end,
            "trial_settings": None,
            "trial_start": now if trial_end else None,
        }
        # The first invoice: licensed items in advance (prorated up to an anchor), nothing metered yet.
        ratio = Decimal(period_end - now) / Decimal(full_end - now) if anchor and not trial_end else Decimal(1)
        invoice = self._issue_invoice(
            sub, "subscription_create", usage=None, advance=None if trial_end else ratio, period=(now, now)
        )
        pays = default_payment_method or customer["invoice_settings"]["default_payment_method"]
        if invoice["amount_due"] == 0:
            self._settle(invoice, paid=True)
        elif collection_method == "send_invoice":
            pass
        elif payment_behavior == "error_if_incomplete" and not pays:
            self._discard_invoice(invoice)
            raise invalid(
                None,
                "This customer has no attached payment source or default payment method. Please consider adding a "
                "default payment method.",
            )
        elif pays and payment_behavior != "default_incomplete":
            self._settle(invoice, paid=True)
        else:
            sub["status"] = "incomplete"
        sub["latest_invoice"] = invoice["id"]
        self.store.objects[sub_id] = sub
        return sub

    def update_subscription(self, sub_id: str, p: Params) -> Obj:
        sub = self.store.require("subscription", "subscription", sub_id, "id", 404)
        if sub["status"] in ("canceled", "incomplete_expired") and set(p) - {
            "metadata",
            "cancellation_details",
            "expand",
        }:
            raise invalid(None, "A canceled subscription can only update its cancellation_details and metadata.")
        if "metadata" in p:
            sub["metadata"] = merge_metadata(sub["metadata"], p["metadata"])
        if "description" in p:
            sub["description"] = get_str(p, "description")
        if "default_payment_method" in p:
            pm_id = get_str(p, "default_payment_method")
            if pm_id is not None:
                self.store.require("PaymentMethod", "payment_method", pm_id, "default_payment_method")
            sub["default_payment_method"] = pm_id
        if "cancel_at_period_end" in p:
            at_end = bool(get_bool(p, "cancel_at_period_end"))
            sub["cancel_at_period_end"] = at_end
            sub["cancel_at"] = sub["items"]["data"][0]["current_period_end"] if at_end else None
            sub["canceled_at"] = self.store.now() if at_end else None
        if "cancellation_details" in p:
            details = get_dict(p, "cancellation_details")
            sub["cancellation_details"].update({k: details[k] or None for k in ("comment", "feedback") if k in details})
        if "pause_collection" in p:
            pause = get_dict(p, "pause_collection")
            sub["pause_collection"] = (
                {"behavior": pause.get("behavior"), "resumes_at": get_int(pause, "resumes_at")} if pause else None
            )
        for i, entry in enumerate(get_list(p, "items")):
            self._update_item(sub, entry, f"items[{i}]")
        return sub

    def _update_item(self, sub: Obj, entry: Any, label: str) -> None:
        if not isinstance(entry, dict):
            raise invalid(label, f"Invalid object: {label} must be a hash")
        items: list[Obj] = sub["items"]["data"]
        item_id = get_str(entry, "id", label=f"{label}[id]")
        if item_id is None:
            price, quantity, metadata = self._subscription_item_params(entry, label)
            first = items[0]
            new: Obj = {
                **copy.deepcopy(first),
                "id": new_id("si_", 14),
                "created": self.store.now(),
                "metadata": metadata,
                "price": copy.deepcopy(price),
            }
            new.pop("quantity", None)
            if price["recurring"]["usage_type"] != "metered":
                new["quantity"] = 1 if quantity is None else quantity
            items.append(new)
        else:
            item = next((i for i in items if i["id"] == item_id), None)
            if item is None:
                raise no_such("subscription item", item_id, f"{label}[id]")
            if get_bool(entry, "deleted", label=f"{label}[deleted]"):
                if len(items) == 1:
                    raise invalid(f"{label}[deleted]", "A subscription must keep at least one item.")
                items.remove(item)
            else:
                if "price" in entry:
                    price_id = get_str(entry, "price", required=True, label=f"{label}[price]") or ""
                    item["price"] = copy.deepcopy(self.store.require("price", "price", price_id, f"{label}[price]"))
                if "quantity" in entry:
                    item["quantity"] = get_int(entry, "quantity", minimum=0, label=f"{label}[quantity]")
                if "metadata" in entry:
                    item["metadata"] = merge_metadata(item["metadata"], entry["metadata"])
        sub["items"]["total_count"] = len(items)

    def cancel_subscription(self, sub_id: str, p: Params) -> Obj:
        sub = self.store.require("subscription", "subscription", sub_id, "id", 404)
        if sub["status"] == "canceled":
            raise invalid(None, f"The subscription {sub_id} has already been canceled.")
        details = get_dict(p, "cancellation_details")
        if get_bool(p, "invoice_now"):
            start = sub["items"]["data"][0]["current_period_start"]
            self._issue_invoice(
                sub,
                "subscription_cycle",
                usage=(start, self.store.now()),
                advance=None,
                period=(start, self.store.now()),
            )
        now = self.store.now()
        sub.update(
            status="canceled",
            canceled_at=now,
            ended_at=now,
            cancel_at=None,
            cancel_at_period_end=False,
            cancellation_details={
                "comment": details.get("comment") or None,
                "feedback": details.get("feedback") or None,
                "reason": "cancellation_requested",
            },
        )
        return sub

    def list_subscriptions(self, p: Params) -> Obj:
        customer, price = get_str(p, "customer"), get_str(p, "price")
        status = one_of(
            p,
            "status",
            (
                "active",
                "all",
                "canceled",
                "ended",
                "incomplete",
                "incomplete_expired",
                "past_due",
                "paused",
                "trialing",
                "unpaid",
            ),
        )

        def keep(s: Obj) -> bool:
            if status is None and s["status"] == "canceled":
                return False  # Stripe leaves canceled subscriptions out unless asked
            if status not in (None, "all") and s["status"] != ("canceled" if status == "ended" else status):
                return False
            prices = {i["price"]["id"] for i in s["items"]["data"]}
            return (customer is None or s["customer"] == customer) and (price is None or price in prices)

        return self.store.page("subscription", "/v1/subscriptions", p, "subscription", keep)

    # --- invoice items and invoices ------------------------------------------------------------

    def create_invoice_item(self, p: Params) -> Obj:
        customer_id = get_str(p, "customer", required=True) or ""
        self.store.require("customer", "customer", customer_id, "customer")
        if "invoice" in p:
            raise invalid("invoice", "The local Stripe stand-in keeps no draft invoices; leave the item pending.")
        pricing = get_dict(p, "pricing")
        price_id = get_str(pricing, "price", label="pricing[price]")
        quantity = get_int(p, "quantity", minimum=0) or 1
        amount = get_int(p, "amount")
        currency = get_str(p, "currency")
        price = None
        if price_id is not None:
            if amount is not None:
                raise invalid("amount", "You may only specify one of these parameters: amount, pricing[price].")
            price = self.store.require("price", "price", price_id, "pricing[price]")
            amount = (price["unit_amount"] or 0) * quantity
            currency = currency or price["currency"]
        if amount is None:
            raise missing("amount")
        if currency is None:
            raise missing("currency")
        sub_id = get_str(p, "subscription")
        if sub_id is not None:
            sub = self.store.require("subscription", "subscription", sub_id, "subscription")
            if sub["customer"] != customer_id:
                raise invalid("subscription", f"The subscription {sub_id} does not belong to customer {customer_id}.")
        period = get_dict(p, "period")
        now = self.store.now()
        discountable = get_bool(p, "discountable")
        return self.store.new(
            "ii_",
            "invoiceitem",
            amount=amount,
            currency=currency.lower(),
            customer=customer_id,
            date=now,
            description=get_str(p, "description"),
            discountable=amount >= 0 if discountable is None else discountable,
            discounts=[],
            invoice=None,
            metadata=get_map(p, "metadata"),
            net_amount=amount,
            parent=None
            if sub_id is None
            else {
                "subscription_details": {"subscription": sub_id, "subscription_item": None},
                "type": "subscription_details",
            },
            period={
                "end": get_int(period, "end", label="period[end]") or now,
                "start": get_int(period, "start", label="period[start]") or now,
            },
            pricing={
                "price_details": {"price": price["id"], "product": price["product"]} if price else None,
                "type": "price_details" if price else None,
                "unit_amount_decimal": price["unit_amount_decimal"] if price else str(Decimal(amount) / quantity),
            },
            proration=False,
            quantity=quantity,
            tax_rates=[],
            test_clock=None,
        )

    def list_invoice_items(self, p: Params) -> Obj:
        customer, invoice, pending = get_str(p, "customer"), get_str(p, "invoice"), get_bool(p, "pending")
        return self.store.page(
            "invoiceitem",
            "/v1/invoiceitems",
            p,
            "invoiceitem",
            lambda o: (
                (customer is None or o["customer"] == customer)
                and (invoice is None or o["invoice"] == invoice)
                and (pending is None or (o["invoice"] is None) == pending)
            ),
        )

    def list_invoices(self, p: Params) -> Obj:
        customer, subscription = get_str(p, "customer"), get_str(p, "subscription")
        status = one_of(p, "status", ("draft", "open", "paid", "uncollectible", "void"))
        return self.store.page(
            "invoice",
            "/v1/invoices",
            p,
            "invoice",
            lambda o: (
                (customer is None or o["customer"] == customer)
                and (subscription is None or o["parent"]["subscription_details"]["subscription"] == subscription)
                and (status is None or o["status"] == status)
            ),
        )

    def _issue_invoice(
        self,
        sub: Obj,
        reason: str,
        *,
        usage: tuple[int, int] | None,
        advance: Decimal | None,
        period: tuple[int, int],
        amount_due: int | None = None,
    ) -> Obj:
        """Finalize an invoice for ``sub``: metered usage over ``usage``, licensed items in advance times
        ``advance`` (1 for a whole period), and the customer's pending invoice items. Status ``open``."""
        invoice_id = new_id("in_")
        lines: list[Obj] = []
        for item in sub["items"]["data"]:
            price = item["price"]
            metered = price["recurring"]["usage_type"] == "metered"
            if metered and usage is not None:
                meter = self.store.objects[price["recurring"]["meter"]]
                quantity = int(self.metering.aggregate(meter, sub["customer"], *usage) or 0)
                amount = _cents(Decimal(price["unit_amount_decimal"]) * quantity)
                line_period = usage
            elif not metered and advance is not None:
                quantity = item["quantity"]
                amount = _cents(Decimal(price["unit_amount_decimal"]) * quantity * advance)
                line_period = (item["current_period_start"], item["current_period_end"])
            else:
                continue
            lines.append(
                self._line(
                    invoice_id,
                    amount,
                    price["currency"],
                    quantity,
                    line_period,
                    {
                        "invoice_item": None,
                        "proration": False,
                        "subscription": sub["id"],
                        "subscription_item": item["id"],
                    },
                    "subscription_item_details",
                    price,
                )
            )
        for ii in self.store.of_type("invoiceitem")[::-1]:
            parent_sub = (ii["parent"] or {}).get("subscription_details", {}).get("subscription")
            if ii["customer"] == sub["customer"] and ii["invoice"] is None and parent_sub in (None, sub["id"]):
                ii["invoice"] = invoice_id
                lines.append(
                    self._line(
                        invoice_id,
                        ii["amount"],
                        ii["currency"],
                        ii["quantity"],
                        (ii["period"]["start"], ii["period"]["end"]),
                        {"invoice_item": ii["id"], "proration": False, "subscription": parent_sub},
                        "invoice_item_details",
                        None,
                        ii["description"],
                    )
                )
        customer = self.store.objects[sub["customer"]]
        total = sum(line["amount"] for line in lines)
        due = max(total, 0) if amount_due is None else amount_due
        number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        now = self.store.now()
        invoice: Obj = {
            "id": invoice_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "CrossLogic Inference Cloud (test)",
            "amount_due": due,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": due,
            "amount_shipping": 0,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "billing_reason": reason,
            "collection_method": sub["collection_method"],
            "created": now,
            "currency": sub["currency"],
            "customer": customer["id"],
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "description": None,
            "due_date": now + 86400 * sub["days_until_due"] if sub["days_until_due"] else None,
            "effective_at": now,
            "ending_balance": 0,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_test/{invoice_id}",
            "invoice_pdf": f"https://pay.stripe.com/invoice/acct_test/{invoice_id}/pdf",
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "total_count": len(lines),
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": None,
            "number": number,
            "parent": {
                "quote_details": None,
                "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"]},
                "type": "subscription_details",
            },
            "period_end": period[1],
            "period_start": period[0],
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "starting_balance": 0,
            "status": "open",
            "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "test_clock": None,
            "total": total,
            "total_excluding_tax": total,
            "webhooks_delivered_at": now,
        }
        self.store.objects[invoice_id] = invoice
        return invoice

    def _line(
        self,
        invoice_id: str,
        amount: int,
        currency: str,
        quantity: int,
        period: tuple[int, int],
        details: Obj,
        kind: str,
        price: Obj | None,
        description: str | None = None,
    ) -> Obj:
        if price is not None and description is None:
            description = f"{quantity} × {self.store.objects[price['product']]['name']}"
        return {
            "id": new_id("il_"),
            "object": "line_item",
            "amount": amount,
            "currency": currency,
            "description": description,
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice_id,
            "livemode": False,
            "metadata": {},
            "parent": {
                "invoice_item_details": details if kind == "invoice_item_details" else None,
                "subscription_item_details": details if kind == "subscription_item_details" else None,
                "type": kind,
            },
            "period": {"end": period[1], "start": period[0]},
            "pricing": {
                "price_details": {"price": price["id"], "product": price["product"]} if price else None,
                "type": "price_details" if price else None,
                "unit_amount_decimal": price["unit_amount_decimal"] if price else str(amount),
            },
            "quantity": quantity,
        }

    def _discard_invoice(self, invoice: Obj) -> None:
        for ii in self.store.of_type("invoiceitem"):
            if ii["invoice"] == invoice["id"]:
                ii["invoice"] = None
        del self.store.objects[invoice["id"]]

    def _settle(self, invoice: Obj, *, paid: bool) -> None:
        now = self.store.now()
        invoice["attempted"] = True
        if invoice["amount_due"] > 0:
            invoice["attempt_count"] += 1
        if paid:
            invoice.update(
                amount_paid=invoice["amount_due"], amount_remaining=0, next_payment_attempt=None, status="paid"
            )
            invoice["status_transitions"]["paid_at"] = now
        else:
            retry = invoice["attempt_count"] < MAX_PAYMENT_ATTEMPTS
            invoice["next_payment_attempt"] = now + RETRY_AFTER_FAILURE_S if retry else None

    def close_period(self, sub_id: str, *, amount_due: int | None = None) -> Obj:
        """The subscription's current period ends: finalize its invoice (metered usage over the period that
        ended, licensed items for the next) and move every item to the next period."""
        sub = self.store.require("subscription", "subscription", sub_id, "subscription")
        first = sub["items"]["data"][0]
        start, end = first["current_period_start"], first["current_period_end"]
        recurring = first["price"]["recurring"]
        anchor_day = datetime.fromtimestamp(sub["billing_cycle_anchor"], UTC).day
        next_end = add_interval(end, recurring["interval"], recurring["interval_count"], anchor_day)
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = end, next_end
        invoice = self._issue_invoice(
            sub,
            "subscription_cycle",
            usage=(start, end),
            advance=Decimal(1),
            period=(start, end),
            amount_due=amount_due,
        )
        sub["latest_invoice"] = invoice["id"]
        return invoice

    def attempt_payment(self, sub_id: str, *, succeed: bool, amount_due: int | None = None) -> Obj:
        """Collect the subscription's open invoice (closing the current period first if none is open)."""
        sub = self.store.require("subscription", "subscription", sub_id, "subscription")
        open_invoice = next(
            (
                i
                for i in self.store.of_type("invoice")
                if i["parent"]["subscription_details"]["subscription"] == sub_id and i["status"] == "open"
            ),
            None,
        )
        invoice = open_invoice or self.close_period(sub_id, amount_due=amount_due)
        self._settle(invoice, paid=succeed)
        if succeed and sub["status"] == "incomplete":
            sub["status"] = "active"
        return invoice

"""A local Stripe (API v1, test mode) on loopback that the real ``stripe`` SDK talks to over HTTP.

It speaks Stripe's wire format: form-encoded bodies in bracket notation, Bearer (or Basic) secret-key
auth, JSON objects with ``id``/``object``/``created``/``livemode``, Stripe's error body, list pages,
``Idempotency-Key`` replays (``Idempotent-Replayed: true``) and conflicts (400 ``idempotency_error``).
The objects and rules live in ``stripe_state`` (storage, catalog), ``stripe_metering`` and
``stripe_billing``; the wire-format helpers in ``stripe_wire``.

Use the ``stripe_fake`` fixture (registered in tests/conftest.py)::

    def test_x(stripe_fake: StripeFake) -> None:
        client = stripe_fake.client()            # stripe.StripeClient pointed at the fake
        customer = client.v1.customers.create({"email": "a@b.c"})
        stripe_fake.fail_next("/v1/billing/meter_events", mode="drop_after")   # recorded, reply lost
        signed = stripe_fake.sign(stripe_fake.invoice_paid_event(sub_id))     # POST to our webhook

The server runs on its own thread (not on an event loop the app under test shares), so synchronous SDK
calls made from inside an async app cannot deadlock against it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import fnmatch
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
import stripe
import stripe.params as p
import stripe.params.billing as pb
import stripe.params.billing_portal as pbp
import stripe.params.checkout as pc

from tests.fakes.stripe_billing import Billing
from tests.fakes.stripe_metering import Metering
from tests.fakes.stripe_state import Catalog, Store
from tests.fakes.stripe_wire import Obj, Params, StripeError, check_params, decode_form, get_list, invalid, new_id

API_KEY = "sk_test_cicLocalFake4eC39HqLyjWDarjtT1zdp7dc"
WEBHOOK_SECRET = "whsec_cicLocalFakeWebhookSigningSecret"
IDEMPOTENCY_TTL_S = 24 * 3600

FailureMode = Literal["error", "drop", "drop_after"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    raw: str  # the form-encoded body (POST) or query string (GET, DELETE) as sent
    params: Params  # ... decoded: {"metadata": {"org_id": "1"}, "items": [{"price": "price_..."}]}
    headers: dict[str, str]  # lower-case names
    status: int  # 0 when the connection was dropped
    idempotency_key: str | None
    replayed: bool
    injected: FailureMode | None


@dataclass(frozen=True)
class SignedWebhook:
    """A webhook body and its ``Stripe-Signature`` header, signed with the SDK's own helper."""

    payload: str
    signature: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Stripe-Signature": self.signature, "Content-Type": "application/json"}

    @property
    def event(self) -> Obj:
        event: Obj = json.loads(self.payload)
        return event


@dataclass
class _Failure:
    pattern: str
    method: str | None
    remaining: int
    mode: FailureMode
    status: int


@dataclass
class _Reply:
    status: int
    body: Obj
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass(frozen=True)
class _Stored:
    fingerprint: str
    reply: _Reply
    request_id: str
    at: int


Handler = Callable[..., Obj]


class StripeFake:
    """State, HTTP semantics and the test-control surface. Every public method is thread-safe and
    returns copies, never live objects."""

    def __init__(self, *, api_key: str = API_KEY, webhook_secret: str = WEBHOOK_SECRET) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.base_url = ""  # set once serving
        self._lock = threading.RLock()
        self._frozen_at: int | None = None
        self._skew = 0
        self._store = Store(self.now, stripe.api_version)
        self._catalog = Catalog(self._store)
        self._metering = Metering(self._store)
        self._billing = Billing(self._store, self._catalog, self._metering)
        self._requests: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._idempotent: dict[str, _Stored] = {}
        self._routes = self._build_routes()

    # --- clients ---------------------------------------------------------------------------------

    def client(self, api_key: str | None = None, **options: Any) -> stripe.StripeClient:
        """A ``stripe.StripeClient`` whose every base address is this server; ``options`` go to its
        constructor (``max_network_retries``, ``http_client``, ``stripe_version``...)."""
        base = self.base_url
        return stripe.StripeClient(
            api_key or self.api_key,
            base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
            **options,
        )

    def patch_globals(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the legacy module-level configuration (``stripe.api_key``, ``stripe.api_base``...) here."""
        for name in ("api_base", "connect_api_base", "upload_api_base", "meter_events_api_base"):
            monkeypatch.setattr(stripe, name, self.base_url)
        monkeypatch.setattr(stripe, "api_key", self.api_key)
        monkeypatch.setattr(stripe, "max_network_retries", 0)

    # --- the fake's clock ------------------------------------------------------------------------

    def now(self) -> int:
        """The account's clock (``created``, meter-event windows, billing periods); real time unless set."""
        return self._frozen_at if self._frozen_at is not None else int(time.time()) + self._skew

    def set_time(self, timestamp: int | None) -> None:
        """Freeze the account's clock at ``timestamp``; ``None`` returns it to real time."""
        with self._lock:
            self._frozen_at, self._skew = timestamp, 0

    def advance_time(self, seconds: int) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._skew += seconds

    # --- inspection ------------------------------------------------------------------------------

    def get(self, object_id: str) -> Obj:
        """Any stored object by id (customer, price, billing.meter, subscription, invoice...); KeyError if none."""
        with self._lock:
            return copy.deepcopy(self._store.objects[object_id])

    def objects(self, object_type: str) -> list[Obj]:
        """Stored objects of one ``object`` type (``"customer"``, ``"billing.meter"``...), oldest first."""
        with self._lock:
            return copy.deepcopy(self._store.of_type(object_type)[::-1])

    def meter_events(self, *, event_name: str | None = None, customer: str | None = None) -> list[Obj]:
        """Accepted meter events (duplicates refused by identifier are not here), in arrival order."""
        with self._lock:
            out = []
            for meter_id, event in self._metering.meter_events:
                key = self._store.objects[meter_id]["customer_mapping"]["event_payload_key"]
                if event_name not in (None, event["event_name"]) or customer not in (None, event["payload"].get(key)):
                    continue
                out.append(copy.deepcopy(event))
            return out

    def usage(self, meter_id: str, customer: str, start: int = 0, end: int | None = None) -> float:
        """The meter's aggregate for ``customer`` over ``start <= timestamp < end`` (default: all time)."""
        with self._lock:
            meter = self._store.objects[meter_id]
            return self._metering.aggregate(meter, customer, start, end or 2**62) or 0.0

    def set_aggregation_lag(self, seconds: int) -> None:
        """Stripe aggregates meter events asynchronously: from now on, event summaries leave out events
        accepted less than ``seconds`` ago on the fake's clock (``advance_time`` lets them in). Default 0."""
        with self._lock:
            self._metering.lag_s = seconds

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def request_count(self, path: str, method: str | None = None) -> int:
        """Requests received for ``path`` (exact, or an fnmatch pattern like ``/v1/subscriptions/*``),
        including refused, replayed and injected-failure ones."""
        with self._lock:
            return sum(1 for r in self._requests if _matches(path, method, r.method, r.path))

    # --- failure injection -----------------------------------------------------------------------

    def fail_next(
        self,
        path: str,
        times: int = 1,
        *,
        method: str | None = None,
        mode: FailureMode = "error",
        status: int = 500,
    ) -> None:
        """Make the next ``times`` requests to ``path`` (exact or fnmatch pattern; any method unless given) fail:

        - ``"error"``: answer ``status`` (default 500, Stripe's ``api_error`` body) without executing;
          nothing is stored under the request's idempotency key, so a retry executes.
        - ``"drop"``: close the connection without answering, without executing (SDK: APIConnectionError).
        - ``"drop_after"``: execute and store the result (idempotency key included), then close the
          connection without answering: Stripe has it, the caller never heard. A retry with the same
          Idempotency-Key replays the result; a new key for the same meter event identifier is refused.
        """
        with self._lock:
            self._failures.append(_Failure(path, method.upper() if method else None, times, mode, status))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    # --- shortcuts for what a customer does outside the API -------------------------------------

    def attach_payment_method(self, customer_id: str) -> str:
        """Save a test card on the customer (as completing a setup-mode Checkout does); returns ``pm_...``."""
        with self._lock:
            pm_id: str = self._catalog.attach_payment_method(customer_id)["id"]
            return pm_id

    def close_period(self, subscription_id: str, *, amount_due: int | None = None) -> Obj:
        """End the subscription's current period: finalize an ``open`` invoice (metered usage of the period
        that ended, licensed items in advance, pending invoice items) and move the items to the next period."""
        with self._lock:
            return copy.deepcopy(self._billing.close_period(subscription_id, amount_due=amount_due))

    # --- webhooks ----------------------------------------------------------------------------------

    def build_event(self, event_type: str, obj: Obj, previous_attributes: Obj | None = None) -> Obj:
        """A Stripe ``event`` (``evt_...``) carrying ``obj`` as ``data.object``; retrievable at /v1/events/{id}."""
        with self._lock:
            return copy.deepcopy(self._store.new_event(event_type, obj, previous_attributes))

    def sign(self, event: Obj | str, *, secret: str | None = None, timestamp: int | None = None) -> SignedWebhook:
        """Serialize ``event`` and sign it with ``stripe.WebhookSignature.generate_signature_header``;
        ``timestamp`` defaults to the real current time (what ``construct_event``'s tolerance checks)."""
        payload = event if isinstance(event, str) else json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, secret or self.webhook_secret, timestamp)
        return SignedWebhook(payload, header)

    def checkout_completed_event(self, session_id: str) -> Obj:
        """The customer completes the session: customer created if none, card saved; subscription mode
        creates the subscription (active, first invoice paid); then ``checkout.session.completed``."""
        with self._lock:
            session = self._billing.complete_checkout(session_id)
            return copy.deepcopy(self._store.new_event("checkout.session.completed", session))

    def invoice_paid_event(self, subscription_id: str, *, amount_due: int | None = None) -> Obj:
        """Pay the subscription's open invoice (after failed attempts, say); with none open, close the
        current period first (see ``close_period``). ``invoice.paid``."""
        with self._lock:
            invoice = self._billing.attempt_payment(subscription_id, succeed=True, amount_due=amount_due)
            return copy.deepcopy(self._store.new_event("invoice.paid", invoice))

    def invoice_payment_failed_event(self, subscription_id: str, *, amount_due: int | None = None) -> Obj:
        """A failed attempt on the subscription's open invoice (``attempt_count`` grows, ``next_payment_attempt``
        set until the 4th); with none open, close the current period first. ``invoice.payment_failed``."""
        with self._lock:
            invoice = self._billing.attempt_payment(subscription_id, succeed=False, amount_due=amount_due)
            return copy.deepcopy(self._store.new_event("invoice.payment_failed", invoice))

    def subscription_updated_event(self, subscription_id: str, **changes: Any) -> Obj:
        """Apply ``changes`` to top-level subscription fields (``status="past_due"``...) and return
        ``customer.subscription.updated`` with their ``previous_attributes``."""
        with self._lock:
            sub = self._store.require("subscription", "subscription", subscription_id, "subscription")
            unknown = set(changes) - set(sub)
            if unknown:
                raise ValueError(f"not subscription fields: {sorted(unknown)}")
            previous = {name: copy.deepcopy(sub[name]) for name in changes}
            sub.update(copy.deepcopy(changes))
            return copy.deepcopy(self._store.new_event("customer.subscription.updated", sub, previous))

    def subscription_deleted_event(self, subscription_id: str) -> Obj:
        """Cancel the subscription now unless already canceled; ``customer.subscription.deleted``."""
        with self._lock:
            sub = self._store.require("subscription", "subscription", subscription_id, "subscription")
            if sub["status"] != "canceled":
                self._billing.cancel_subscription(subscription_id, {})
            return copy.deepcopy(self._store.new_event("customer.subscription.deleted", sub))

    # --- HTTP semantics ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: str, headers: dict[str, str]) -> _Reply:
        with self._lock:
            params: Params = {}
            raw = body if method == "POST" else query
            with contextlib.suppress(StripeError):
                params = decode_form(raw)
            failure = self._take_failure(method, path)
            key = headers.get("idempotency-key") if method == "POST" else None
            replayed = False
            if failure is not None and failure.mode != "drop_after":
                reply = _injected(failure)
            else:
                try:
                    params = decode_form(raw)
                    reply, replayed = self._execute(method, path, params, headers, key)
                except StripeError as exc:
                    reply = _Reply(exc.status, exc.body(), dict(exc.headers))
                reply.headers.setdefault("Request-Id", new_id("req_", 14))
                reply.headers["Stripe-Version"] = headers.get("stripe-version") or stripe.api_version
                if key:
                    reply.headers["Idempotency-Key"] = key
                if failure is not None:
                    reply = _Reply(reply.status, reply.body, reply.headers, drop=True)
            self._requests.append(
                RecordedRequest(
                    method,
                    path,
                    raw,
                    params,
                    dict(headers),
                    0 if reply.drop else reply.status,
                    key,
                    replayed,
                    failure.mode if failure else None,
                )
            )
            return reply

    def _execute(
        self, method: str, path: str, params: Params, headers: dict[str, str], key: str | None
    ) -> tuple[_Reply, bool]:
        self._authenticate(headers.get("authorization", ""))
        route, args = self._route(method, path)
        schema, handler = route
        if key:
            fingerprint = json.dumps([method, path, params], sort_keys=True)
            stored = self._idempotent.get(key)
            if stored is not None and self.now() - stored.at < IDEMPOTENCY_TTL_S:
                if stored.fingerprint != fingerprint:
                    raise StripeError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{key}' if you meant to execute a different "
                        "request.",
                        type="idempotency_error",
                    )
                headers_out = {**stored.reply.headers, "Idempotent-Replayed": "true"}
                headers_out["Original-Request"] = stored.request_id
                headers_out["Request-Id"] = new_id("req_", 14)
                return _Reply(stored.reply.status, copy.deepcopy(stored.reply.body), headers_out), True
        if schema is not None:
            check_params(params, schema)
        result = copy.deepcopy(handler(params, *args))
        for expand_path in get_list(params, "expand"):
            self._expand(result, str(expand_path).split("."), str(expand_path))
        reply = _Reply(200, result, {"Request-Id": new_id("req_", 14)})
        if key:
            stored_reply = _Reply(200, copy.deepcopy(result), dict(reply.headers))
            self._idempotent[key] = _Stored(fingerprint, stored_reply, reply.headers["Request-Id"], self.now())
        return reply, False

    def _authenticate(self, authorization: str) -> None:
        scheme, _, credential = authorization.partition(" ")
        key = ""
        if scheme.lower() == "bearer":
            key = credential.strip()
        elif scheme.lower() == "basic":
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                key = base64.b64decode(credential.strip()).decode().partition(":")[0]
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at "
                "https://support.stripe.com/.",
            )
        if key != self.api_key:
            prefix = key[: key.find("_", key.find("_") + 1) + 1] if key.count("_") >= 2 else ""
            masked = prefix + "*" * max(len(key) - len(prefix) - 4, 0) + key[-4:]
            raise StripeError(401, f"Invalid API Key provided: {masked}")

    def _route(self, method: str, path: str) -> tuple[tuple[type | None, Handler], tuple[str, ...]]:
        for route_method, pattern, schema, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return (schema, handler), match.groups()
        raise StripeError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at "
            "https://support.stripe.com/.",
        )

    def _expand(self, node: Any, parts: list[str], path: str) -> None:
        if isinstance(node, list):
            for item in node:
                self._expand(item, parts, path)
            return
        if not isinstance(node, dict) or parts[0] not in node:
            raise invalid("expand", f"This property cannot be expanded ({path}).")
        if len(parts) > 1:
            self._expand(node[parts[0]], parts[1:], path)
            return
        value = node[parts[0]]
        if isinstance(value, str):
            target = self._store.objects.get(value)
            if target is None:
                raise invalid("expand", f"This property cannot be expanded ({path}).")
            node[parts[0]] = copy.deepcopy(target)
        elif value is not None and not isinstance(value, dict):
            raise invalid("expand", f"This property cannot be expanded ({path}).")

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._failures:
            if _matches(failure.pattern, failure.method, method, path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _build_routes(self) -> list[tuple[str, re.Pattern[str], type | None, Handler]]:
        store, catalog, metering, billing = self._store, self._catalog, self._metering, self._billing

        def get(kind: str, object_type: str) -> Handler:
            return lambda params, object_id: store.retrieve(kind, object_type, object_id)

        table: list[tuple[str, str, type | None, Handler]] = [
            ("POST", "/v1/customers", p.CustomerCreateParams, catalog.create_customer),
            ("GET", "/v1/customers", p.CustomerListParams, catalog.list_customers),
            ("GET", "/v1/customers/{id}", p.CustomerRetrieveParams, get("customer", "customer")),
            (
                "POST",
                "/v1/customers/{id}",
                p.CustomerUpdateParams,
                lambda params, i: catalog.update_customer(i, params),
            ),
            ("DELETE", "/v1/customers/{id}", p.CustomerDeleteParams, lambda params, i: catalog.delete_customer(i)),
            ("POST", "/v1/products", p.ProductCreateParams, catalog.create_product),
            ("GET", "/v1/products", p.ProductListParams, catalog.list_products),
            ("GET", "/v1/products/{id}", p.ProductRetrieveParams, get("product", "product")),
            ("POST", "/v1/prices", p.PriceCreateParams, catalog.create_price),
            ("GET", "/v1/prices", p.PriceListParams, catalog.list_prices),
            ("GET", "/v1/prices/{id}", p.PriceRetrieveParams, get("price", "price")),
            ("POST", "/v1/billing/meters", pb.MeterCreateParams, metering.create_meter),
            ("GET", "/v1/billing/meters", pb.MeterListParams, metering.list_meters),
            ("GET", "/v1/billing/meters/{id}", pb.MeterRetrieveParams, get("meter", "billing.meter")),
            (
                "POST",
                "/v1/billing/meters/{id}",
                pb.MeterUpdateParams,
                lambda params, i: metering.update_meter(i, params),
            ),
            (
                "POST",
                "/v1/billing/meters/{id}/deactivate",
                pb.MeterDeactivateParams,
                lambda params, i: metering.set_meter_status(i, active=False),
            ),
            (
                "POST",
                "/v1/billing/meters/{id}/reactivate",
                pb.MeterReactivateParams,
                lambda params, i: metering.set_meter_status(i, active=True),
            ),
            (
                "GET",
                "/v1/billing/meters/{id}/event_summaries",
                pb.MeterEventSummaryListParams,
                lambda params, i: metering.list_event_summaries(i, params),
            ),
            ("POST", "/v1/billing/meter_events", pb.MeterEventCreateParams, metering.create_meter_event),
            ("POST", "/v1/checkout/sessions", pc.SessionCreateParams, billing.create_checkout_session),
            ("GET", "/v1/checkout/sessions", pc.SessionListParams, billing.list_checkout_sessions),
            (
                "GET",
                "/v1/checkout/sessions/{id}",
                pc.SessionRetrieveParams,
                get("checkout.session", "checkout.session"),
            ),
            ("POST", "/v1/billing_portal/sessions", pbp.SessionCreateParams, billing.create_portal_session),
            ("POST", "/v1/subscriptions", p.SubscriptionCreateParams, billing.create_subscription),
            ("GET", "/v1/subscriptions", p.SubscriptionListParams, billing.list_subscriptions),
            ("GET", "/v1/subscriptions/{id}", p.SubscriptionRetrieveParams, get("subscription", "subscription")),
            (
                "POST",
                "/v1/subscriptions/{id}",
                p.SubscriptionUpdateParams,
                lambda params, i: billing.update_subscription(i, params),
            ),
            (
                "DELETE",
                "/v1/subscriptions/{id}",
                p.SubscriptionCancelParams,
                lambda params, i: billing.cancel_subscription(i, params),
            ),
            ("POST", "/v1/invoiceitems", p.InvoiceItemCreateParams, billing.create_invoice_item),
            ("GET", "/v1/invoiceitems", p.InvoiceItemListParams, billing.list_invoice_items),
            ("GET", "/v1/invoiceitems/{id}", p.InvoiceItemRetrieveParams, get("invoiceitem", "invoiceitem")),
            ("GET", "/v1/invoices", p.InvoiceListParams, billing.list_invoices),
            ("GET", "/v1/invoices/{id}", p.InvoiceRetrieveParams, get("invoice", "invoice")),
            ("GET", "/v1/setup_intents/{id}", p.SetupIntentRetrieveParams, get("setupintent", "setup_intent")),
            ("GET", "/v1/payment_methods/{id}", p.PaymentMethodRetrieveParams, get("PaymentMethod", "payment_method")),
            ("GET", "/v1/events", p.EventListParams, store.list_events),
            ("GET", "/v1/events/{id}", p.EventRetrieveParams, get("event", "event")),
        ]
        return [(m, re.compile(path.replace("{id}", "([^/]+)")), s, h) for m, path, s, h in table]


def _matches(pattern: str, method: str | None, request_method: str, request_path: str) -> bool:
    return (method is None or method.upper() == request_method) and fnmatch.fnmatchcase(request_path, pattern)


def _injected(failure: _Failure) -> _Reply:
    if failure.mode == "drop":
        return _Reply(0, {}, drop=True)
    error = StripeError(
        failure.status,
        "An unknown error occurred while processing your request (injected by the test).",
        type="api_error" if failure.status >= 500 else "invalid_request_error",
        code="rate_limit" if failure.status == 429 else None,
    )
    return _Reply(failure.status, error.body(), {"Request-Id": new_id("req_", 14)})


# --- the HTTP server --------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: StripeFake) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Stripe's API serves the SDK's pooled connections
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait on delayed ACKs
    timeout = 30  # idle keep-alive connections are let go
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        url = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake.handle(self.command, url.path, url.query, body, headers)
        if reply.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def serve_stripe_fake(*, api_key: str = API_KEY, webhook_secret: str = WEBHOOK_SECRET) -> Iterator[StripeFake]:
    """A fresh fake account served on an ephemeral loopback port until the block exits."""
    fake = StripeFake(api_key=api_key, webhook_secret=webhook_secret)
    server = _Server(fake)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-fake")
    thread.daemon = True
    thread.start()
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def stripe_fake() -> Iterator[StripeFake]:
    """A local Stripe account for one test: ``.client()``, ``.base_url``, ``.api_key``, ``.webhook_secret``."""
    with serve_stripe_fake() as fake:
        yield fake

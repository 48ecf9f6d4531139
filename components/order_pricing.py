"""Price an order: line items, discount, tax and currency conversion, in exact decimal arithmetic."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from server import StepContext, ValidationError, hookimpl

CENT = Decimal("0.01")
# Units of each currency per 1 USD; a config may pass its own `rates`.
DEFAULT_RATES = {"USD": "1", "EUR": "0.92", "GBP": "0.79", "JPY": "151.5", "CHF": "0.88"}


def _decimal(value, field):
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"{field}: {value!r} is not a number", field=field) from None
    if not number.is_finite() or number < 0:
        raise ValidationError(f"{field}: must be a non-negative number", field=field)
    return number


def _subtotal(data):
    items = data.get("items")
    if items is None:
        return _decimal(data.get("total", 0), "total")
    if not isinstance(items, list):
        raise ValidationError("items: must be a list", field="items")
    subtotal = Decimal(0)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError(f"items.{i}: must be an object", field=f"items.{i}")
        qty = _decimal(item.get("qty", 1), f"items.{i}.qty")
        subtotal += qty * _decimal(item.get("unit_price", 0), f"items.{i}.unit_price")
    return subtotal


def price(ctx: StepContext) -> dict:
    """Output `subtotal`, `discount`, `tax`, `total` and `currency`, rounded to cents."""
    config, data = ctx.config, ctx.data
    rates = {k.upper(): Decimal(str(v)) for k, v in (config.get("rates") or DEFAULT_RATES).items()}
    source = str(data.get("currency") or config.get("base_currency", "USD")).upper()
    target = str(config.get("currency") or source).upper()
    for code in (source, target):
        if code not in rates:
            raise ValidationError(f"currency {code!r} is not supported", field="currency")
    subtotal = _subtotal(data) / rates[source] * rates[target]
    discount = subtotal * _decimal(config.get("discount_percent", 0), "discount_percent") / 100
    tax = (subtotal - discount) * _decimal(config.get("tax_rate", 0), "tax_rate")
    cents = {name: value.quantize(CENT, ROUND_HALF_UP)
             for name, value in (("subtotal", subtotal), ("discount", discount), ("tax", tax))}
    total = cents["subtotal"] - cents["discount"] + cents["tax"]
    return {**{k: float(v) for k, v in cents.items()}, "total": float(total), "currency": target}


@hookimpl
def register_steps(register):
    register("step.price_order", price)

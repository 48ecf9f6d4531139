"""Price an order: line items, discount, tax and currency conversion, in exact decimal arithmetic."""

from decimal import ROUND_HALF_UP, Decimal, DecimalException, localcontext

from server import StepContext, ValidationError, hookimpl

CENT = Decimal("0.01")
# Units of each currency per 1 USD; a config may pass its own `rates`.
DEFAULT_RATES = {"USD": "1", "EUR": "0.92", "GBP": "0.79", "JPY": "151.5", "CHF": "0.88"}


def prepare(config):
    """Check rates, currencies, discount and tax once, when the config loads."""
    try:
        rates = {str(k).upper(): Decimal(str(v)) for k, v in (config.get("rates") or DEFAULT_RATES).items()}
    except DecimalException:
        raise ValueError("rates must map currency codes to numbers") from None
    if not rates or any(not rate.is_finite() or rate <= 0 for rate in rates.values()):
        raise ValueError("every rate must be a positive number")
    for key in ("currency", "base_currency"):
        code = config.get(key)
        if isinstance(code, str) and "{{" not in code and code.upper() not in rates:
            raise ValueError(f"{key} {code!r} has no rate")
    for key, high in (("discount_percent", 100), ("tax_rate", 1)):
        value = config.get(key, 0)
        if isinstance(value, str) and "{{" in value:
            continue
        try:
            number = Decimal(str(value)) if not isinstance(value, bool) else None
        except DecimalException:
            number = None
        if number is None or not number.is_finite() or not 0 <= number <= high:
            raise ValueError(f"{key} must be a number from 0 to {high}")
    return rates


def _amount(value, field):
    """A non-negative decimal from the request, or a 400 naming the field."""
    if value is None or isinstance(value, bool):
        raise ValidationError(f"{field}: a number is required", field=field)
    try:
        number = Decimal(str(value))
    except DecimalException:
        raise ValidationError(f"{field}: {value!r} is not a number", field=field) from None
    if not number.is_finite() or number < 0:
        raise ValidationError(f"{field}: must be a non-negative number", field=field)
    return number


def _subtotal(data):
    items = data.get("items")
    if items is None:
        return _amount(data.get("total"), "total")
    if not isinstance(items, list):
        raise ValidationError("items: must be a list", field="items")
    subtotal = Decimal(0)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError(f"items.{i}: must be an object", field=f"items.{i}")
        qty = _amount(item.get("qty", 1), f"items.{i}.qty")
        subtotal += qty * _amount(item.get("unit_price"), f"items.{i}.unit_price")
    return subtotal


def price(ctx: StepContext) -> dict:
    """Output `subtotal`, `discount`, `tax`, `total` and `currency`, rounded to cents."""
    config, data, rates = ctx.config, ctx.data, ctx.prepared
    source = str(data.get("currency") or config.get("base_currency", "USD")).upper()
    target = str(config.get("currency") or source).upper()
    for code in (source, target):
        if code not in rates:
            raise ValidationError(f"currency {code!r} is not supported", field="currency")
    with localcontext() as decimal_context:
        decimal_context.prec = 60  # money rarely needs it, but a huge order must be a 400, not a crash
        try:
            subtotal = _subtotal(data) / rates[source] * rates[target]
            discount = subtotal * Decimal(str(config.get("discount_percent", 0))) / 100
            tax = (subtotal - discount) * Decimal(str(config.get("tax_rate", 0)))
            cents = {
                name: value.quantize(CENT, ROUND_HALF_UP)
                for name, value in (("subtotal", subtotal), ("discount", discount), ("tax", tax))
            }
        except DecimalException:
            raise ValidationError("the order's amounts are too large to price", field="total") from None
    total = cents["subtotal"] - cents["discount"] + cents["tax"]
    return {**{k: float(v) for k, v in cents.items()}, "total": float(total), "currency": target}


@hookimpl
def register_steps(register):
    register("step.price_order", price, prepare=prepare)

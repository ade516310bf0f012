"""Stable error codes with the Russian message a cashier or office worker reads.

The code is the contract (tills switch on it); the message is for people.  Both sides render
every expected failure as ``{"error": {"code", "message", "details"}}`` through ``BonusError``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final


class ErrorCode(StrEnum):
    """Every stable error code of the till's and the office's APIs."""

    VALIDATION_ERROR = "validation_error"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    CARD_NOT_FOUND = "card_not_found"
    CARD_BLOCKED = "card_blocked"
    CARD_EXISTS = "card_exists"
    PHONE_INVALID = "phone_invalid"
    CONSENT_REQUIRED = "consent_required"
    REDEMPTION_STALE_SYNC = "redemption_stale_sync"
    REDEMPTION_EXCEEDS_MAX = "redemption_exceeds_max"
    REDEMPTION_OFFLINE_LIMIT = "redemption_offline_limit"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    VERIFICATION_REQUIRED = "verification_required"
    VERIFICATION_INVALID = "verification_invalid"
    VERIFICATION_EXPIRED = "verification_expired"
    VERIFICATION_RATE_LIMITED = "verification_rate_limited"
    VERIFICATION_NOT_FOUND = "verification_not_found"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_NO_BALANCE = "provider_no_balance"
    PHONE_LOOKUP_UNAVAILABLE = "phone_lookup_unavailable"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    RECEIPT_NOT_FOUND = "receipt_not_found"
    RETURN_EXCEEDS_SALE = "return_exceeds_sale"
    HOLD_NOT_FOUND = "hold_not_found"
    HOLD_EXPIRED = "hold_expired"
    HOLD_RESOLVED = "hold_resolved"
    SERVICE_BUSY = "service_busy"
    OPERATION_IN_PROGRESS = "operation_in_progress"
    STORE_DISABLED = "store_disabled"
    STORE_CLOSED = "store_closed"
    LOGIN_RATE_LIMITED = "login_rate_limited"
    LOGIN_BUSY = "login_busy"
    PROTOCOL_VERSION = "protocol_version"
    INTERNAL_ERROR = "internal_error"


MESSAGES_RU: Final[dict[ErrorCode, str]] = {
    ErrorCode.VALIDATION_ERROR: "Неверные данные запроса",
    ErrorCode.UNAUTHORIZED: "Нет доступа: неверный или отсутствующий ключ кассы",
    ErrorCode.FORBIDDEN: "Недостаточно прав для этой операции",
    ErrorCode.NOT_FOUND: "Адрес не найден",
    ErrorCode.METHOD_NOT_ALLOWED: "Метод не поддерживается",
    ErrorCode.PAYLOAD_TOO_LARGE: "Слишком большой запрос",
    ErrorCode.CARD_NOT_FOUND: "Карта не найдена",
    ErrorCode.CARD_BLOCKED: "Карта заблокирована",
    ErrorCode.CARD_EXISTS: "Карта с таким номером уже зарегистрирована",
    ErrorCode.PHONE_INVALID: "Неверный номер телефона: нужно 10 цифр после кода страны",
    ErrorCode.CONSENT_REQUIRED: "Нужно согласие покупателя на обработку персональных данных",
    ErrorCode.REDEMPTION_STALE_SYNC: "Списание бонусов невозможно по техническим причинам",
    ErrorCode.REDEMPTION_EXCEEDS_MAX: "Сумма списания больше допустимой для этого чека",
    ErrorCode.REDEMPTION_OFFLINE_LIMIT: (
        "Списание бонусов без связи с сервером ограничено: превышен лимит"
    ),
    ErrorCode.INSUFFICIENT_BALANCE: "Недостаточно бонусов на карте",
    ErrorCode.VERIFICATION_REQUIRED: "Нужно подтверждение кодом от покупателя",
    ErrorCode.VERIFICATION_INVALID: "Неверный код подтверждения",
    ErrorCode.VERIFICATION_EXPIRED: "Код подтверждения устарел, запросите новый",
    ErrorCode.VERIFICATION_RATE_LIMITED: "Слишком много запросов кода, попробуйте позже",
    ErrorCode.VERIFICATION_NOT_FOUND: "Подтверждение не найдено",
    ErrorCode.PROVIDER_UNAVAILABLE: "Не удалось отправить код: сервис сообщений недоступен",
    ErrorCode.PROVIDER_NO_BALANCE: (
        "Не удалось отправить код: закончились средства у сервиса сообщений"
    ),
    ErrorCode.PHONE_LOOKUP_UNAVAILABLE: (
        "Поиск по телефону недоступен: на сервере аптеки не установлен ключ телефонов. "
        "Найдите карту по номеру и сообщите в техподдержку"
    ),
    ErrorCode.IDEMPOTENCY_CONFLICT: "Операция с этим номером уже проведена с другими данными",
    ErrorCode.RECEIPT_NOT_FOUND: "Чек не найден",
    ErrorCode.RETURN_EXCEEDS_SALE: "Возврат больше, чем было продано по чеку",
    ErrorCode.HOLD_NOT_FOUND: "Резерв бонусов не найден",
    ErrorCode.HOLD_EXPIRED: "Срок резерва бонусов истёк",
    ErrorCode.HOLD_RESOLVED: "Резерв бонусов уже использован или снят",
    ErrorCode.SERVICE_BUSY: "Сервис занят, повторите запрос",
    ErrorCode.LOGIN_RATE_LIMITED: "Слишком много неудачных попыток входа, повторите позже",
    ErrorCode.LOGIN_BUSY: "Слишком много входов одновременно, повторите через несколько секунд",
    ErrorCode.PROTOCOL_VERSION: "Версия программы не поддерживается сервером",
    ErrorCode.OPERATION_IN_PROGRESS: "Операция ещё выполняется, повторите позже",
    ErrorCode.STORE_DISABLED: (
        "Аптека отключена от программы лояльности: списание бонусов недоступно. Обратитесь в офис"
    ),
    ErrorCode.STORE_CLOSED: "Аптека закрыта в программе лояльности: операции с бонусами не проводятся",
    ErrorCode.INTERNAL_ERROR: "Внутренняя ошибка сервиса бонусов, повторите операцию",
}

#: The HTTP status each code is answered with: a 4xx for everything a caller can cause.
HTTP_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.CARD_NOT_FOUND: 404,
    ErrorCode.CARD_BLOCKED: 403,
    ErrorCode.CARD_EXISTS: 409,
    ErrorCode.PHONE_INVALID: 422,
    ErrorCode.CONSENT_REQUIRED: 422,
    ErrorCode.REDEMPTION_STALE_SYNC: 409,
    ErrorCode.REDEMPTION_EXCEEDS_MAX: 422,
    ErrorCode.REDEMPTION_OFFLINE_LIMIT: 409,
    ErrorCode.INSUFFICIENT_BALANCE: 409,
    ErrorCode.VERIFICATION_REQUIRED: 403,
    ErrorCode.VERIFICATION_INVALID: 422,
    ErrorCode.VERIFICATION_EXPIRED: 410,
    ErrorCode.VERIFICATION_RATE_LIMITED: 429,
    ErrorCode.VERIFICATION_NOT_FOUND: 404,
    ErrorCode.PROVIDER_UNAVAILABLE: 424,
    ErrorCode.PROVIDER_NO_BALANCE: 424,
    # The store's key of phone hashes is missing or wrong: a dependency, as a provider is.
    ErrorCode.PHONE_LOOKUP_UNAVAILABLE: 424,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.RECEIPT_NOT_FOUND: 404,
    ErrorCode.RETURN_EXCEEDS_SALE: 422,
    ErrorCode.HOLD_NOT_FOUND: 404,
    ErrorCode.HOLD_EXPIRED: 410,
    ErrorCode.HOLD_RESOLVED: 409,
    ErrorCode.SERVICE_BUSY: 429,
    ErrorCode.LOGIN_RATE_LIMITED: 429,
    # The server's hashing capacity, not this client, is exhausted; still a 4xx like
    # ``service_busy``: the caller may simply try again.
    ErrorCode.LOGIN_BUSY: 429,
    ErrorCode.PROTOCOL_VERSION: 426,
    ErrorCode.OPERATION_IN_PROGRESS: 409,
    ErrorCode.STORE_DISABLED: 403,
    ErrorCode.STORE_CLOSED: 403,
    # The one 5xx: a fault of ours, never an answer to bad input.
    ErrorCode.INTERNAL_ERROR: 500,
}


class BonusError(Exception):
    """An expected failure with a stable code, rendered to the caller as a 4xx."""

    def __init__(self, code: ErrorCode, message: str | None = None, **details: Any) -> None:
        self.code = code
        self.message = message or MESSAGES_RU[code]
        self.details = details
        super().__init__(f"{code}: {self.message}")

    @property
    def http_status(self) -> int:
        """The HTTP status this error is answered with."""
        return HTTP_STATUS[self.code]

    def to_body(self) -> dict[str, Any]:
        """The error shape every API answers with."""
        return {"error": {"code": str(self.code), "message": self.message, "details": self.details}}

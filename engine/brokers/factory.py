"""Build the configured brokers: the default account's (``paper`` or any ccxt exchange id) and
one per named account (``[accounts.<name>]``), each recording under its account's name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from engine.brokers.base import Broker
from engine.brokers.paper import PaperBroker
from engine.brokers.readings import ReadPolicy
from engine.settings import AccountSettings, EngineSettings
from storage import Storage

__all__ = ["create_account_brokers", "create_broker"]


def create_broker(
    settings: EngineSettings, storage: Storage, credentials: Mapping[str, str] | None = None
) -> Broker:
    """The broker ``settings.broker`` names (the default account). Exchange ``credentials`` are
    read from the environment by the command package (``settings.exchange_credentials``) and
    handed in: the engine never reads the environment."""
    default = AccountSettings(broker=settings.broker, risk=settings.risk)
    return _build(settings.broker, default, settings, storage, credentials or {})


def create_account_brokers(
    settings: EngineSettings,
    storage: Storage,
    credentials: Callable[[str, AccountSettings], Mapping[str, str]],
) -> dict[str, Broker]:
    """One broker per named account, named after it (its orders, positions, marks and equity
    are recorded under that name). ``credentials(name, account)`` gives an exchange account's
    keys (``settings.account_credentials``)."""
    return {
        name: _build(name, account, settings, storage, credentials(name, account))
        for name, account in settings.accounts.items()
    }


def _build(
    name: str,
    account: AccountSettings,
    settings: EngineSettings,
    storage: Storage,
    credentials: Mapping[str, str],
) -> Broker:
    if account.broker == "paper":
        paper = account.paper_book(settings.paper)
        book = PaperBroker(storage, paper, max_leverage=account.risk.max_leverage)
        book.name = name
        return book
    from engine.brokers.ccxt_broker import CcxtBroker

    return CcxtBroker(
        account.broker,
        name=name,
        credentials=dict(credentials),
        sandbox=settings.sandbox if account.sandbox is None else account.sandbox,
        api_url=account.api_url or settings.exchange_api_url,
        timeout_ms=settings.exchange_timeout_ms,
        # One reconciliation read after a lost answer keeps the worst case (order timeout +
        # lookup + backoff) near 2 x timeout, inside TradingView's 3 s at the 1.2 s default.
        read_retries=1,
        backoff_s=0.1,
        quote_currency=settings.paper.quote_currency,
        reads=ReadPolicy(fresh_s=settings.exchange_fresh_s, max_age_s=settings.exchange_max_age_s),
    )

"""Subscriptions: validation, patching, matching, sealing."""

from __future__ import annotations

import pytest

from webhooks.address_guard import AddressGuard
from webhooks.errors import InvalidSubscription, SealError
from webhooks.sealing import SecretSealer
from webhooks.subscriptions import (
    Subscription,
    new_subscription,
    patch_subscription,
    pattern_regex,
)

GUARD = AddressGuard()
SEALER = SecretSealer(b"k" * 32)


def _new(**fields: object) -> tuple[Subscription, str]:
    body = {"url": "https://hooks.example.com/in", "event_types": ["expense_report:*"], **fields}
    return new_subscription(body, "acme", GUARD, 1_000_000)


def test_matching_by_tenant_pattern_subject_type_and_creation() -> None:
    sub, _ = _new(subject_type="expense_report")
    assert sub.matches("acme", "expense_report:updated", "expense_report", 1_000_000)
    assert not sub.matches("globex", "expense_report:updated", "expense_report", 1_000_000)
    assert not sub.matches("acme", "invoice:updated", "expense_report", 1_000_000)
    assert not sub.matches("acme", "expense_report:updated", "invoice", 1_000_000)
    assert not sub.matches("acme", "expense_report:updated", "expense_report", 999_999)


def test_patterns_only_treat_star_as_special() -> None:
    assert pattern_regex("a.b*").fullmatch("a.bxyz")
    assert not pattern_regex("a.b*").fullmatch("axbxyz")
    assert pattern_regex("*:deleted").fullmatch("invoice:deleted")
    assert not pattern_regex("[ab]").fullmatch("a")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"url": 5}, "string"),
        ({"url": "http://10.0.0.1/"}, "private"),
        ({"event_types": "x:*"}, "non-empty list"),
        ({"event_types": ["x" * 300]}, "at most"),
        ({"event_types": [""]}, "non-empty"),
        ({"event_types": ["*"] * 51}, "at most"),
        ({"subject_type": "\ud800"}, "control"),
        ({"description": 3}, "string"),
        ({"tenant_id": "globex"}, "unknown field"),
    ],
)
def test_invalid_subscriptions_say_why(fields: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidSubscription, match=words):
        _new(**fields)


def test_rotation_keeps_the_old_secret_for_the_overlap_only() -> None:
    sub, first = _new()
    rotated, second = patch_subscription(
        sub, {"rotate_secret": True, "secret_overlap_s": 60}, GUARD, 2_000_000
    )
    assert second is not None and second != first
    assert len(rotated.signing_keys(2_000_000)) == 2
    assert len(rotated.signing_keys(2_000_000 + 61_000_000)) == 1
    again, third = patch_subscription(
        rotated, {"rotate_secret": True, "secret_overlap_s": 0}, GUARD, 3_000_000
    )
    assert third is not None and len(again.signing_keys(3_000_000)) == 1
    with pytest.raises(InvalidSubscription):
        patch_subscription(sub, {"secret_overlap_s": 5}, GUARD, 1)
    with pytest.raises(InvalidSubscription):
        patch_subscription(sub, {"rotate_secret": True, "secret_overlap_s": True}, GUARD, 1)


def test_pause_and_resume() -> None:
    sub, _ = _new()
    paused, _ = patch_subscription(sub, {"paused": True}, GUARD, 5)
    assert paused.paused and paused.public()["status"] == "paused"
    resumed, _ = patch_subscription(paused, {"paused": False}, GUARD, 6)
    assert not resumed.paused and resumed.paused_reason is None


def test_sealed_records_hold_no_secret_and_open_only_with_the_key_and_id() -> None:
    sub, secret = _new()
    sealed = sub.seal(SEALER)
    assert secret.encode() not in sealed and secret[6:].encode() not in sealed
    assert Subscription.unseal(sealed, SEALER) == sub
    with pytest.raises(SealError):
        Subscription.unseal(sealed, SecretSealer(b"x" * 32))
    moved = sealed.replace(sub.subscription_id.encode(), b"wh_ffffffffffffffff")
    with pytest.raises(SealError):
        Subscription.unseal(moved, SEALER)
    assert secret not in str(sub) and "secret" not in sub.public()


def test_webhook_settings_from_the_environment() -> None:
    from changefeed.config import ConfigError, Settings

    env = {
        "CHANGEFEED_SECRET": "0123456789abcdef",
        "CHANGEFEED_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8, ::1/128",
        "CHANGEFEED_WEBHOOK_RETRY_SCHEDULE": "250ms,5s,2m,1h,1d",
        "CHANGEFEED_WEBHOOK_TIMEOUT_S": "2.5",
        "CHANGEFEED_WEBHOOK_CONCURRENCY": "4",
        "CHANGEFEED_WEBHOOK_PAUSE_AFTER_S": "60",
    }
    hooks = Settings.from_env(env).webhooks
    assert hooks.allow_networks == ("127.0.0.0/8", "::1/128")
    assert hooks.retry_schedule_s == (0.25, 5.0, 120.0, 3600.0, 86400.0)
    assert (hooks.timeout_s, hooks.concurrency, hooks.pause_after_s) == (2.5, 4, 60.0)
    with pytest.raises(ConfigError, match="duration"):
        Settings.from_env({**env, "CHANGEFEED_WEBHOOK_RETRY_SCHEDULE": "soon"})

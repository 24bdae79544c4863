import logging

import pytest

from core.hooks import HandlerRegistry, Hook, Provider


def test_a_failing_subscriber_is_logged_and_the_others_still_run(caplog):
    hook: Hook[[int]] = Hook("test_hook")
    seen: list[int] = []

    def fails(value: int) -> None:
        raise RuntimeError("boom")

    hook.subscribe(fails)
    hook.subscribe(seen.append)
    hook.subscribe(seen.append)  # once only, as when ready() runs twice

    with caplog.at_level(logging.ERROR, logger="promsnmp.hooks"):
        hook(7)

    assert seen == [7]
    assert "test_hook subscriber" in caplog.text and "boom" in caplog.text


def test_a_registry_gives_the_handler_of_a_key_and_its_errors_reach_the_caller():
    registry: HandlerRegistry = HandlerRegistry("test_registry")

    def rejects(payload: dict) -> None:
        raise ValueError(payload["why"])

    registry.register("frame", rejects)
    handler = registry.get("frame")
    assert handler is rejects
    with pytest.raises(ValueError, match="bad"):
        handler({"why": "bad"})
    registry.unregister("frame")
    assert registry.get("frame") is None


def test_a_provider_answers_with_its_default_until_an_app_provides_and_its_errors_reach_the_caller():
    provider: Provider[[str], bool] = Provider("test_provider", default=lambda key: False)
    assert provider("chicago") is False

    def refuses(key: str) -> bool:
        raise LookupError(key)

    provider.provide(lambda key: key == "chicago")
    assert provider("chicago") is True and provider(key="denver") is False
    provider.provide(refuses)  # the last one provided answers
    with pytest.raises(LookupError, match="denver"):
        provider("denver")

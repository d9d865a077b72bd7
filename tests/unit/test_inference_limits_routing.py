"""Rate limiter (fake clock) and the routing decision when the primary endpoint is down."""

from __future__ import annotations

import pytest

from flows.common.errors import ConfigError, ServiceUnavailable
from flows.inference.engines import Outcome, is_outage, retry_delay, sampling_kwargs
from flows.inference.limits import RateLimiter
from flows.inference.routing import Action, choose_endpoint, decide
from flows.inference.usage import ModelUsage, Usage, add_usage, parse_cost, usage_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_requests_per_minute_allows_a_burst_then_spaces_requests() -> None:
    clock = FakeClock()
    lim = RateLimiter(requests_per_minute=60, clock=clock)
    assert all(lim.try_acquire() == 0 for _ in range(60))
    assert lim.try_acquire() == pytest.approx(1.0)
    clock.sleep(0.5)
    assert lim.try_acquire() == pytest.approx(0.5)
    clock.sleep(0.5)
    assert lim.try_acquire() == 0
    assert lim.try_acquire() == pytest.approx(1.0)


def test_tokens_per_hour_blocks_while_in_debt() -> None:
    clock = FakeClock()
    lim = RateLimiter(tokens_per_hour=3600, clock=clock)  # 1 token per second
    assert lim.try_acquire() == 0
    lim.record_tokens(3600 + 9)  # a response used the whole hour and 9 more
    assert lim.try_acquire() == pytest.approx(10.0)  # repay 9, then 1 token must be available
    clock.sleep(10)
    assert lim.try_acquire() == 0


def test_no_limits_never_wait() -> None:
    lim = RateLimiter()
    lim.record_tokens(10**9)
    assert all(lim.try_acquire() == 0 for _ in range(1000))


@pytest.mark.parametrize(
    ("up", "waited", "policy", "expected"),
    [
        (True, 0, "fail", Action.USE_PRIMARY),
        (True, 999, "fallback", Action.USE_PRIMARY),
        (False, 0, "fail", Action.FAIL),
        (False, 10, "wait", Action.WAIT),
        (False, 60, "wait", Action.FAIL),
        (False, 10, "fallback", Action.WAIT),
        (False, 60, "fallback", Action.USE_FALLBACK),
    ],
)
def test_routing_decision_tree(up: bool, waited: float, policy: str, expected: Action) -> None:
    assert decide(up, waited, policy, max_wait_s=60, has_fallback=True) is expected


def test_routing_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="one of"):
        decide(False, 0, "retry", 60, True)
    with pytest.raises(ConfigError, match="no fallback"):
        decide(False, 0, "fallback", 60, False)


def test_choose_endpoint_polls_until_the_primary_comes_back() -> None:
    clock = FakeClock()
    health = iter([False, False, True])
    url = choose_endpoint("http://p", "http://f", lambda _: next(health), "wait", 60, 5, clock=clock, sleep=clock.sleep)
    assert url == "http://p" and clock.now == 1010.0


def test_choose_endpoint_routes_to_the_gateway_after_the_wait() -> None:
    clock = FakeClock()
    url = choose_endpoint("http://p", "http://f", lambda _: False, "fallback", 12, 5, clock=clock, sleep=clock.sleep)
    assert url == "http://f" and clock.now == 1012.0


def test_choose_endpoint_fails_clearly_after_the_wait() -> None:
    clock = FakeClock()
    with pytest.raises(ServiceUnavailable, match=r"http://p is down \(waited 30s, on_primary_down=wait\)"):
        choose_endpoint("http://p", None, lambda _: False, "wait", 30, 10, clock=clock, sleep=clock.sleep)


def test_retry_delay_honours_retry_after_and_backs_off() -> None:
    assert retry_delay(0, "7", 1.0, 60.0) == 7.0
    assert retry_delay(0, "120", 1.0, 60.0) == 60.0
    assert 4.0 <= retry_delay(3, None, 1.0, 60.0) <= 8.0
    assert retry_delay(10, "Wed, 21 Oct 2015 07:28:00 GMT", 1.0, 30.0) <= 30.0


def test_usage_and_sampling_mapping() -> None:
    body = {"model": "qwen", "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    assert usage_of(body, "0.25") == Usage("qwen", 3, 4, 7, 0.25)
    assert usage_of({"usage": {"prompt_tokens": 3}}, None, "asked-for") == Usage("asked-for", 3, 0, 3, None)
    assert usage_of({"data": []}).total_tokens == 0 and usage_of("not json").model == "unknown"
    assert [parse_cost(h) for h in (None, "", "abc", "-1", "0", "1e-3")] == [None, None, None, None, 0.0, 0.001]
    kw = sampling_kwargs({"max_tokens": 5, "temperature": 0.0, "messages": [], "stop": None})
    assert kw == {"max_tokens": 5, "temperature": 0.0}


def test_a_models_cost_is_known_only_when_every_response_reported_one() -> None:
    per_model: dict[str, ModelUsage] = {}
    add_usage(per_model, Usage("gw", 2, 3, 5, 0.5))
    add_usage(per_model, Usage("gw", 1, 1, 2, 0.25))
    add_usage(per_model, Usage("vllm", 4, 4, 8, None))
    assert per_model["gw"].cost_known == 0.75 and per_model["gw"].cost_text() == "$0.750000"
    assert per_model["vllm"].cost_known is None and per_model["vllm"].cost_text() == "unknown"
    add_usage(per_model, Usage("gw", 1, 1, 2, None))
    assert per_model["gw"].cost_known is None
    assert per_model["gw"].cost_text() == "$0.750000 for 2 of 3 requests, rest unknown"
    assert (per_model["gw"].requests, per_model["gw"].prompt_tokens, per_model["gw"].completion_tokens) == (3, 4, 5)


def test_only_server_side_failures_trigger_the_failover() -> None:
    assert is_outage(Outcome(503, None, "connection_error", "refused"))
    assert is_outage(Outcome(504, None, "timeout", "slow"))
    assert is_outage(Outcome(502, {}, "http_error", "HTTP 502"))
    assert not is_outage(Outcome(400, {}, "http_error", "HTTP 400: bad request"))
    assert not is_outage(Outcome(429, {}, "http_error", "HTTP 429"))  # throttled, not down
    assert not is_outage(Outcome(200, {}))

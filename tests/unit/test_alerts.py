"""The alert rule engine on event sequences with an explicit clock; config; payloads; webhooks."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sensor_gateway.alert_delivery import WebhookConfig, WebhookDestination, load_webhooks
from sensor_gateway.alerts import (
    WEEKLY_ADVICE,
    Alert,
    AlertEngine,
    AlertError,
    AlertsConfig,
    HoursWindow,
)
from sensor_gateway.cli import main
from sensor_gateway.errors import ConfigError
from sensor_gateway.messages import (
    EventMessage,
    GatewayStatusMessage,
    StatusMessage,
    event_id,
)

BERLIN = ZoneInfo("Europe/Berlin")
MIN = 60_000
#: All rules on, no quiet hours, no watch hours, no cooldowns unless a test sets them.
BASE = AlertsConfig(
    watch_hours="",
    cramp_cooldown_s=0,
    disconnected_cooldown_s=0,
    lead_off_cooldown_s=0,
    battery_cooldown_s=0,
)


def ms(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    """Berlin wall time in 2024 → UTC milliseconds."""
    dt = datetime(2024, month, day, hour, minute, second, tzinfo=BERLIN)
    return round(dt.timestamp() * 1000)


def event(
    kind: str,
    at_ms: int,
    *,
    band: str = "band-a",
    episode: int = 1,
    shown_s: float = 12.0,
    **details: float | int | str,
) -> EventMessage:
    """A validated-looking event; ``shown_s`` = emission − onset for confirmations."""
    t_s = 1000.0
    return EventMessage(
        gateway="gw",
        band_id=band,
        type=kind,
        episode=episode,
        time_ms=at_ms,
        event_id=event_id(band, episode, kind, at_ms),
        t_s=t_s,
        emitted_at_s=t_s + shown_s,
        published_ms=at_ms,
        details=details,
    )


def status(
    at_ms: int, *, band: str = "band-a", gateway: str = "gw", **values: float | bool | None
) -> StatusMessage:
    """A band status message."""
    return StatusMessage(gateway=gateway, band_id=band, time_ms=at_ms, status=values)


def engine(**overrides: object) -> AlertEngine:
    """An engine on :data:`BASE` with some fields changed."""
    return AlertEngine(replace(BASE, **overrides), BERLIN)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cramp rule


def test_a_confirmed_cramp_alerts_at_once_and_its_end_adds_nothing() -> None:
    eng = engine()
    onset = ms(3, 5, 2, 29)
    [alert] = eng.on_event(event("cramp_confirmed", onset), onset + 12_000)
    assert (alert.rule, alert.band_id, alert.priority) == ("cramp", "band-a", "high")
    assert alert.deliver_at_ms == alert.time_ms == onset + 12_000
    assert "02:29" in alert.message and "pull your toes up" in alert.message
    assert alert.title.isascii() and "band-a" in alert.title
    end = event("cramp_end", onset + 40_000, duration_s=40.0, severity=2)
    assert eng.on_event(end, onset + 42_000) == []
    assert eng.counts["raised_cramp"] == 1


def test_other_events_raise_nothing_and_redelivered_events_are_dropped() -> None:
    eng = engine()
    t = ms(3, 5, 2)
    for kind in ("spasm_onset", "spasm_cleared", "prelude", "signal_quality"):
        assert eng.on_event(event(kind, t), t) == []
    confirmed = event("cramp_confirmed", t)
    assert len(eng.on_event(confirmed, t)) == 1
    assert eng.on_event(confirmed, t + 1000) == []
    assert eng.counts["duplicate_events"] == 1


def test_cramp_rule_can_be_switched_off() -> None:
    t = ms(3, 5, 2)
    assert engine(cramp=False).on_event(event("cramp_confirmed", t), t) == []


def test_cooldown_is_per_rule_and_band() -> None:
    eng = engine(cramp_cooldown_s=600)
    t = ms(3, 5, 2)
    assert len(eng.on_event(event("cramp_confirmed", t, episode=1), t)) == 1
    later = t + 5 * MIN
    assert eng.on_event(event("cramp_confirmed", later, episode=2), later) == []
    assert len(eng.on_event(event("cramp_confirmed", later, band="band-b"), later)) == 1
    after = t + 10 * MIN
    assert len(eng.on_event(event("cramp_confirmed", after, episode=3), after)) == 1
    assert eng.counts["cooldown_cramp"] == 1
    # the end of the cramp suppressed by the cooldown does not alert later either
    end = event("cramp_end", later + 20 * MIN, episode=2, duration_s=1200.0)
    assert eng.on_event(end, later + 20 * MIN) == []


def test_minimum_duration_waits_for_the_end_of_the_cramp() -> None:
    eng = engine(cramp_min_duration_s=30)
    onset = ms(3, 5, 3)
    assert eng.on_event(event("cramp_confirmed", onset), onset + 12_000) == []
    short = event("cramp_end", onset + 20_000, duration_s=20.0, severity=1)
    assert eng.on_event(short, onset + 22_000) == []
    onset2 = onset + 10 * MIN
    long_end = event("cramp_end", onset2 + 45_000, episode=2, duration_s=45.0, severity=2)
    [alert] = eng.on_event(long_end, onset2 + 47_000)
    assert "45 s" in alert.message and "moderate" in alert.message
    assert alert.details["onset"] == "2024-03-05T02:10:00.000Z"  # 03:10 in Berlin
    assert alert.details["duration_s"] == 45.0


def test_a_short_minimum_is_met_by_the_confirmation_itself() -> None:
    eng = engine(cramp_min_duration_s=10)
    onset = ms(3, 5, 3)
    assert len(eng.on_event(event("cramp_confirmed", onset, shown_s=12.0), onset)) == 1
    eng2 = engine(cramp_min_duration_s=15)
    assert eng2.on_event(event("cramp_confirmed", onset, shown_s=12.0), onset) == []


def test_minimum_severity_accepts_levels_and_words() -> None:
    eng = engine(cramp_min_severity=2)
    t = ms(3, 5, 4)
    assert eng.on_event(event("cramp_confirmed", t), t) == []
    assert eng.on_event(event("cramp_end", t + 30_000, duration_s=30.0, severity=1), t) == []
    severe = event("cramp_end", t + MIN, episode=2, duration_s=130.0, severity=3)
    assert "severe" in eng.on_event(severe, t + MIN)[0].message
    worded = event("cramp_end", t + 2 * MIN, episode=3, duration_s=35.0, severity="moderate")
    assert len(eng.on_event(worded, t + 2 * MIN)) == 1
    unknown = event("cramp_end", t + 3 * MIN, episode=4, duration_s=35.0)
    assert eng.on_event(unknown, t + 3 * MIN) == []


# --------------------------------------------------------------------------- quiet hours


def test_quiet_hours_hold_alerts_until_their_end_but_not_urgent_cramps() -> None:
    eng = engine(quiet_hours="22:30-07:00")
    t = ms(3, 5, 2)
    [battery] = eng.on_status(status(t, connected=True, battery_pct=10.0), t)
    assert battery.deliver_at_ms == ms(3, 5, 7) and battery.time_ms == t
    [cramp] = eng.on_event(event("cramp_confirmed", t), t)
    assert cramp.deliver_at_ms == t
    assert eng.counts["held"] == 1


def test_non_urgent_cramps_are_held_too_and_the_window_wraps_midnight() -> None:
    eng = engine(quiet_hours="22:30-07:00", cramp_urgent=False)
    before = ms(3, 5, 22, 29)
    assert eng.on_event(event("cramp_confirmed", before), before)[0].deliver_at_ms == before
    late = ms(3, 5, 23, 15)
    held = eng.on_event(event("cramp_confirmed", late, episode=2), late)[0]
    assert held.deliver_at_ms == ms(3, 6, 7)
    morning = ms(3, 6, 7)
    sent = eng.on_event(event("cramp_confirmed", morning, episode=3), morning)[0]
    assert sent.deliver_at_ms == morning


def test_hours_window_parsing_and_edges() -> None:
    window = HoursWindow.parse("22:30-07:00")
    assert window == HoursWindow(time(22, 30), time(7, 0))
    assert HoursWindow.parse("") is None
    inside = datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN)  # the night clocks go forward
    assert window.contains(inside)
    assert window.end_after(inside) == datetime(2024, 3, 31, 7, 0, tzinfo=BERLIN)
    assert window.start_before(inside) == datetime(2024, 3, 30, 22, 30, tzinfo=BERLIN)
    assert not window.contains(datetime(2024, 3, 31, 7, 0, tzinfo=BERLIN))
    day = HoursWindow.parse("09:00-17:00")
    assert day is not None and day.contains(datetime(2024, 3, 5, 9, 0, tzinfo=BERLIN))
    for bad in ("22-07", "25:00-07:00", "07:00-07:00", "7:61-08:00"):
        with pytest.raises(ValueError, match="hours"):
            HoursWindow.parse(bad)


# --------------------------------------------------------------------------- weekly rule


def test_weekly_rule_fires_at_the_threshold_with_plain_advice() -> None:
    eng = engine(weekly_nights=3)
    last = date(2024, 3, 10)
    now = ms(3, 11, 8)
    nights = {
        "band-a": [date(2024, 3, 4), date(2024, 3, 7), date(2024, 3, 10), date(2024, 3, 10)],
        "band-b": [date(2024, 3, 9), date(2024, 3, 10), date(2024, 3, 1)],  # 1st: too old
    }
    [alert] = eng.on_weekly(nights, last, now)
    assert (alert.rule, alert.band_id) == ("frequent_cramps", "band-a")
    assert alert.details["nights_with_cramps"] == 3
    assert alert.title == "Cramps on 3 of the last 7 nights (band-a)"
    assert alert.advice == WEEKLY_ADVICE
    text = alert.message.lower()
    for words in (
        "doctor",
        "frequent or severe",
        "muscle weakness",
        "swollen, red",
        "stretch the calf",
        "pull your toes up",
        "massage",
        "warm",
        "water",
    ):
        assert words in text, words


def test_weekly_rule_cooldown_and_off_switch() -> None:
    eng = engine(weekly_nights=2, weekly_cooldown_s=7 * 86_400)
    nights = {"band-a": [date(2024, 3, 9), date(2024, 3, 10)]}
    assert len(eng.on_weekly(nights, date(2024, 3, 10), ms(3, 11, 8))) == 1
    nights["band-a"].append(date(2024, 3, 11))
    assert eng.on_weekly(nights, date(2024, 3, 11), ms(3, 12, 8)) == []
    assert eng.counts["cooldown_frequent_cramps"] == 1
    nights["band-a"] += [date(2024, 3, 17), date(2024, 3, 18)]
    assert len(eng.on_weekly(nights, date(2024, 3, 18), ms(3, 19, 8))) == 1
    assert engine(weekly_nights=0).on_weekly(nights, date(2024, 3, 18), ms(3, 19, 8)) == []


# --------------------------------------------------------------------------- band status


def test_disconnection_alerts_once_after_the_delay() -> None:
    eng = engine(disconnected_after_s=600)
    t0 = ms(3, 5, 1)
    assert eng.on_status(status(t0, connected=True), t0) == []
    t1 = t0 + 10 * MIN
    assert eng.on_status(status(t1, connected=False), t1) == []
    assert eng.tick(t1 + 10 * MIN - 1) == []
    [alert] = eng.tick(t1 + 10 * MIN)
    assert alert.rule == "disconnected" and "01:10" in alert.message and "10 min" in alert.message
    assert eng.on_status(status(t1 + 11 * MIN, connected=False), t1 + 11 * MIN) == []
    assert eng.tick(t1 + 60 * MIN) == []
    # a new disconnection after a reconnect is a new episode
    t2 = t1 + 70 * MIN
    eng.on_status(status(t2, connected=True), t2)
    eng.on_status(status(t2 + MIN, connected=False), t2 + MIN)
    assert [a.rule for a in eng.tick(t2 + 11 * MIN)] == ["disconnected"]


def test_a_band_never_seen_connected_does_not_alert() -> None:
    eng = engine(disconnected_after_s=60, lead_off_after_s=60)
    t = ms(3, 5, 1)
    eng.on_status(status(t, connected=False), t)
    assert eng.tick(t + 60 * MIN) == []


def test_watch_hours_limit_link_and_contact_alerts_to_conditions_begun_inside() -> None:
    eng = engine(disconnected_after_s=600, watch_hours="23:00-06:00")
    morning = ms(3, 5, 7)
    eng.on_status(status(morning - MIN, connected=True), morning - MIN)
    eng.on_status(status(morning, connected=False), morning)  # band taken off after 06:00
    assert eng.tick(morning + 60 * MIN) == []
    assert eng.tick(ms(3, 5, 23, 30)) == []  # not the next evening either
    night = ms(3, 5, 23, 40)
    eng.on_status(status(night, connected=True), night)
    eng.on_status(status(night + MIN, connected=False), night + MIN)
    assert [a.rule for a in eng.tick(night + 11 * MIN)] == ["disconnected"]


def test_lead_off_alerts_only_after_good_contact_and_only_while_connected() -> None:
    eng = engine(lead_off_after_s=300)
    t = ms(3, 5, 2)
    eng.on_status(status(t, connected=True, lead_off=True), t)  # on the charger
    assert eng.tick(t + 30 * MIN) == []
    t1 = t + 31 * MIN
    eng.on_status(status(t1, connected=True, lead_off=False), t1)
    eng.on_status(status(t1 + MIN, connected=True, lead_off=True), t1 + MIN)
    assert eng.tick(t1 + 5 * MIN) == []
    [alert] = eng.tick(t1 + 6 * MIN)
    assert alert.rule == "lead_off" and "Refit" in alert.message
    # contact back, then off again, but the link drops: only the link counts
    t2 = t1 + 20 * MIN
    eng.on_status(status(t2, connected=True, lead_off=False), t2)
    eng.on_status(status(t2 + MIN, connected=True, lead_off=True), t2 + MIN)
    eng.on_status(status(t2 + 2 * MIN, connected=False, lead_off=True), t2 + 2 * MIN)
    assert [a.rule for a in eng.tick(t2 + 30 * MIN)] == ["disconnected"]


def test_gateway_last_will_disconnects_its_bands() -> None:
    eng = engine(disconnected_after_s=600)
    t = ms(3, 5, 2)
    eng.on_status(status(t, connected=True), t)
    eng.on_status(status(t, band="band-b", gateway="other", connected=True), t)
    will = GatewayStatusMessage(gateway="gw", online=False, time_ms=None)
    assert eng.on_gateway_status(will, t + MIN) == []
    assert [(a.rule, a.band_id) for a in eng.tick(t + 11 * MIN)] == [("disconnected", "band-a")]


def test_low_battery_once_per_discharge_with_hysteresis() -> None:
    eng = engine(battery_low_pct=15)
    t = ms(3, 5, 20)
    assert eng.on_status(status(t, connected=True, battery_pct=50.0), t) == []
    [alert] = eng.on_status(status(t + MIN, connected=True, battery_pct=14.0), t + MIN)
    assert alert.rule == "battery_low" and "14 %" in alert.message and alert.priority == "low"
    assert eng.on_status(status(t + 2 * MIN, connected=True, battery_pct=9.0), t + 2 * MIN) == []
    assert eng.on_status(status(t + 3 * MIN, connected=True, battery_pct=18.0), t + 3 * MIN) == []
    assert eng.on_status(status(t + 4 * MIN, connected=True, battery_pct=14.0), t + 4 * MIN) == []
    t5, t6 = t + 5 * MIN, t + 6 * MIN
    assert eng.on_status(status(t5, connected=True, battery_pct=14.0, charging=True), t5) == []
    assert len(eng.on_status(status(t6, connected=True, battery_pct=13.0), t6)) == 1
    flagged = engine()
    assert len(flagged.on_status(status(t, connected=True, battery_low=True), t)) == 1
    assert engine(battery_low_pct=0).on_status(status(t, battery_pct=1.0), t) == []


# --------------------------------------------------------------------------- state, payload


def test_state_survives_a_restart_through_json() -> None:
    cfg = replace(BASE, cramp_cooldown_s=600, disconnected_after_s=600)
    eng = AlertEngine(cfg, BERLIN)
    t = ms(3, 5, 2)
    confirmed = event("cramp_confirmed", t)
    eng.on_event(confirmed, t)
    eng.on_status(status(t, connected=True), t)
    eng.on_status(status(t + MIN, connected=False), t + MIN)
    again = AlertEngine(cfg, BERLIN, json.loads(json.dumps(eng.state())))
    assert again.on_event(confirmed, t + 2 * MIN) == []  # already seen
    assert again.on_event(event("cramp_confirmed", t + 2 * MIN, episode=2), t + 2 * MIN) == []
    assert [a.rule for a in again.tick(t + 11 * MIN)] == ["disconnected"]


@pytest.mark.parametrize(
    "state",
    [
        {"version": 2},
        {"version": 1, "fired": {}},
        {"version": 1, "fired": [], "bands": {}, "seen": [], "open_cramps": {}},
    ],
)
def test_a_broken_state_is_refused(state: dict[str, object]) -> None:
    with pytest.raises(AlertError, match="state"):
        AlertEngine(BASE, BERLIN, state)


def test_alert_payload_round_trip_and_refusal() -> None:
    eng = engine(weekly_nights=1)
    [alert] = eng.on_weekly({"band-a": [date(2024, 3, 10)]}, date(2024, 3, 10), ms(3, 11, 8))
    doc = json.loads(alert.to_json())
    assert doc["schema"] == 1 and doc["kind"] == "alert" and doc["rule"] == "frequent_cramps"
    assert doc["time"] == "2024-03-11T07:00:00.000Z" and doc["advice"] == list(WEEKLY_ADVICE)
    assert Alert.from_json(alert.to_json()) == alert
    for raw in (b"not json", b'{"schema": 2}', alert.to_json().replace(b"band-a", b"bad band")):
        with pytest.raises(AlertError):
            Alert.from_json(raw)


def test_alert_ids_are_deterministic() -> None:
    t = ms(3, 5, 2)
    first = engine().on_event(event("cramp_confirmed", t), t)[0]
    second = engine().on_event(event("cramp_confirmed", t), t + 5000)[0]
    assert first.alert_id == second.alert_id


# --------------------------------------------------------------------------- config


def test_config_from_toml_with_env_override_and_webhooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = {
        "alerts": {
            "quiet_hours": "22:00-06:30",
            "cramp_min_severity": 2,
            "webhooks": {
                "phone": {
                    "style": "ntfy",
                    "url": "https://ntfy.sh/x",
                    "rules": ["cramp", "frequent_cramps"],
                },
                "ha": {"style": "homeassistant", "url": "http://ha.lan:8123/api/webhook/abc"},
            },
        }
    }
    monkeypatch.setenv("CRAMPWATCH_ALERTS_WEEKLY_NIGHTS", "4")
    cfg = AlertsConfig.load(doc)
    assert (cfg.quiet_hours, cfg.cramp_min_severity, cfg.weekly_nights) == ("22:00-06:30", 2, 4)
    token = tmp_path / "token"
    token.write_text("tk_secret\n")
    env = {"CRAMPWATCH_ALERTS_WEBHOOKS_PHONE_TOKEN_FILE": str(token)}
    hooks = load_webhooks(doc, env)
    assert hooks["phone"] == WebhookConfig(
        "https://ntfy.sh/x", "ntfy", "tk_secret", ("cramp", "frequent_cramps")
    )
    assert hooks["ha"].style == "homeassistant" and hooks["ha"].token == ""


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"quiet_hours": "late"}, "hours must look like"),
        ({"cramp_min_severity": 4}, "cramp_min_severity"),
        ({"snooze": 1}, "unknown key(s) snooze"),
        ({"webhooks": {"Phone": {"url": "https://x"}}}, "name must be"),
        ({"webhooks": {"p": {"url": "ftp://x"}}}, "url must be http"),
        ({"webhooks": {"p": {"url": "https://x", "style": "slack"}}}, "style must be"),
        ({"webhooks": {"p": {"url": "https://x", "rules": ["crampz"]}}}, "unknown rule"),
        ({"webhooks": {"p": {"url": "https://x", "token": "t"}}}, "no token in the file"),
        (
            {"webhooks": {"p": {"url": "http://ha/api/hook/1", "style": "homeassistant"}}},
            "/api/webhook/",
        ),
    ],
)
def test_bad_config_is_a_clear_error(table: dict[str, object], needle: str) -> None:
    doc = {"alerts": table}
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        AlertsConfig.load(doc)
        load_webhooks(doc, {})


def test_the_documented_example_config_loads(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "alerts.md").read_text(encoding="utf-8")
    doc = tomllib.loads(text.split("```toml\n", 1)[1].split("```", 1)[0])
    url = tmp_path / "ha-url"
    url.write_text("http://homeassistant.local:8123/api/webhook/crampwatch-5b1e0c7d94\n")
    cfg = AlertsConfig.load(doc)
    assert (cfg.quiet_hours, cfg.cramp_urgent, cfg.weekly_nights) == ("22:30-07:00", True, 3)
    hooks = load_webhooks(doc, {"CRAMPWATCH_ALERTS_WEBHOOKS_HOME_URL_FILE": str(url)})
    assert {name: hook.style for name, hook in hooks.items()} == {
        "care": "json",
        "phone": "ntfy",
        "home": "homeassistant",
    }
    assert hooks["home"].url.endswith("/api/webhook/crampwatch-5b1e0c7d94")


def test_cli_refuses_bad_config_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("USERNAME", "PASSWORD", "PASSWORD_FILE"):
        monkeypatch.delenv(f"CRAMPWATCH_MQTT_{key}", raising=False)
    path = tmp_path / "c.toml"
    path.write_text('[alerts]\nquiet_hours = "soon"\n')
    assert main(["alerts", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        "crampwatch: [alerts]: hours must look like '22:30-07:00', got 'soon'\n"
    )
    path.write_text("[alerts]\nweekly_nights = 0\n")
    assert main(["alerts", "--config", str(path)]) == 2
    assert "username and password are required" in capsys.readouterr().err


# --------------------------------------------------------------------------- webhook requests


def test_webhook_requests_per_style() -> None:
    eng = engine(weekly_nights=1)
    [alert] = eng.on_weekly({"band-a": [date(2024, 3, 10)]}, date(2024, 3, 10), ms(3, 11, 8))
    body = alert.to_json()
    ntfy = WebhookDestination("p", WebhookConfig("https://ntfy.sh/x", "ntfy", "tk"), 5.0)
    headers, data = ntfy.request(alert, body)
    assert headers["Title"] == alert.title and headers["Priority"] == "default"
    assert headers["Tags"] == "calendar,leg" and headers["Authorization"] == "Bearer tk"
    assert data.decode("utf-8") == alert.message
    generic = WebhookDestination("j", WebhookConfig("https://example.org/hook"), 5.0)
    headers, data = generic.request(alert, body)
    assert data == body and headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    accented = replace(alert, title="Crampe: bande réveillée")
    title = ntfy.request(accented, body)[0]["Title"]
    assert title.isascii() and title.startswith("=?UTF-8?B?")

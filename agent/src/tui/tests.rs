//! Screens rendered at 80x24 on ratatui's `TestBackend` and compared with reviewed
//! snapshots in `snapshots/` (`UPDATE_SNAPSHOTS=1` rewrites them; review the diff), and
//! the keys that lead to actions.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use serde_json::json;

use super::app::{Action, App, Effect, Screen, Snapshot};
use super::ui;

fn snapshot() -> Snapshot {
    let drivers = json!([
        {"name": "mast", "kind": "modbus", "stream": "weather", "priority": 6, "state": "failing",
         "errors": 14, "last_error": "timeout after 500ms (unit 3)", "last_ok": null,
         "readings": 5120, "last_reading": "2026-11-22T10:00:00Z",
         "counters": {"crc_errors": 2, "timeouts": 12},
         "channels": {
            "temperature": {"ts": 0, "time_quality": "ntp", "value": 8.25, "unit": "degC",
                            "quality": "good", "quality_reason": null},
            "wind_speed": {"ts": 0, "time_quality": "ntp", "value": 0, "unit": "m/s",
                           "quality": "bad", "quality_reason": "exception 2: illegal address"}
         }},
        {"name": "gps", "kind": "sim", "stream": "gps", "priority": 5, "state": "running",
         "errors": 0, "last_error": null, "last_ok": null, "readings": 880,
         "last_reading": null, "counters": {}, "channels": {}}
    ]);
    let errors = json!({
        "active": [
            {"severity": "error", "component": "driver/mast", "message": "timeout after 500ms (unit 3)"},
            {"severity": "warning", "component": "sink/kafka", "message": "paused by an operator"}
        ],
        "recent": [
            {"ts": "2026-11-22T10:00:01.5Z", "component": "driver/mast",
             "message": "timeout after 500ms (unit 3)", "count": 12},
            {"ts": "2026-11-22T09:58:00Z", "component": "sink/archive",
             "message": "bucket: permission denied", "count": 1}
        ]
    });
    Snapshot {
        status: Some(json!({
            "gateway": "cerro-dome2-gw", "uptime_s": 3725, "time_quality": "ntp",
            "disk_free_bytes": 12_884_901_888u64, "ingest_rate_per_s": 52.5,
            "buffer": {"degraded": false, "records": 120_000, "bytes": 9_437_184,
                       "last_seq": 880_123, "records_evicted": 0, "gaps": 0},
            "ingest": {"running": true, "readings": 880_200, "unrouted": 0}
        })),
        sinks: vec![
            json!({"name": "archive", "state": "connected", "paused": false,
                   "backlog_records": 12, "backlog_bytes": 2048, "oldest_unsent_age_s": 1.5,
                   "drain_rate_per_s": 48.25,
                   "delivered_records": 880_000, "last_error": null}),
            json!({"name": "kafka", "state": "paused", "paused": true,
                   "backlog_records": 119_988, "backlog_bytes": 9_400_000,
                   "oldest_unsent_age_s": 4000.0, "delivered_records": 760_000,
                   "last_error": "broker down"}),
        ],
        drivers: serde_json::from_value(drivers).expect("drivers"),
        errors: Some(serde_json::from_value(errors).expect("errors")),
        buffer: Some(json!({
            "records": 120_000, "record_bytes": 9_437_184, "first_seq": 760_124,
            "last_seq": 880_123, "db_bytes": 11_000_000, "wal_bytes": 4_000_000,
            "spool_files": 3, "spool_bytes": 600_000,
            "oldest_ts": "2026-11-22T08:53:20Z", "disk_available_bytes": 12_884_901_888u64,
            "quarantined": 0, "status": {"degraded": false, "reasons": []},
            "sinks": [
                {"sink": "archive", "pending_records": 12, "pending_bytes": 2048,
                 "oldest_pending_seq": 880_112, "oldest_pending_ingest": "2026-11-22T10:00:00Z",
                 "gaps_pending": 0},
                {"sink": "kafka", "pending_records": 119_988, "pending_bytes": 9_400_000,
                 "oldest_pending_seq": 760_124, "oldest_pending_ingest": "2026-11-22T08:53:20Z",
                 "gaps_pending": 1}
            ],
            "gaps": {"total": 1, "records_lost": 4000, "uncounted": 0, "recent": [
                {"id": 1, "stream": "allsky.thumbs", "first_seq": 100, "last_seq": 4099,
                 "count": 4000, "reason": "evicted: buffer over max_bytes"}
            ]}
        })),
        audit: vec![
            json!({"id": 1, "ts": "2026-11-22T09:00:00Z", "actor": "skygate",
                   "action": "agent.start", "target": "cerro-dome2-gw", "result": "ok"}),
            json!({"id": 2, "ts": "2026-11-22T09:30:00Z", "actor": "uid:1000(obs)",
                   "action": "sink.pause", "target": "kafka", "result": "ok"}),
        ],
        workflows: vec![
            json!({"name": "weather", "file": "/etc/skygate/workflows/weather.yaml",
                   "input": ["weather"], "steps": ["derive", "alarm", "convert", "window"],
                   "output_stream": "weather.1m", "sinks": ["kafka"],
                   "records_in": 86_400, "records_out": 5_760, "errors": 0,
                   "dead_lettered": 0, "last_error": null}),
            json!({"name": "sky", "file": "/etc/skygate/workflows/sky.yaml",
                   "input": ["sky.quality"], "steps": ["wasm"], "output_stream": "sky.clear",
                   "sinks": [], "records_in": 7_200, "records_out": 7_180, "errors": 1,
                   "dead_lettered": 20,
                   "last_error": "wasm function sky_clear.wasm ran past its time limit of 200ms"}),
        ],
        at: "10:00:02".into(),
        error: None,
    }
}

fn render(app: &App) -> String {
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    t.draw(|f| ui::draw(f, app)).expect("draw");
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/tui/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, text).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    assert_eq!(text, want, "screen {name} differs from {}", path.display());
}

fn app_on(screen: Screen) -> App {
    let mut app = App::new(false);
    app.on_snapshot(snapshot());
    app.screen = screen;
    app
}

#[test]
fn every_screen_fits_80x24_and_matches_its_snapshot() {
    for (screen, name) in [
        (Screen::Overview, "overview"),
        (Screen::Instruments, "instruments"),
        (Screen::Buffer, "buffer"),
        (Screen::Errors, "errors"),
        (Screen::Audit, "audit"),
        (Screen::Workflows, "workflows"),
    ] {
        check(name, &render(&app_on(screen)));
    }
}

#[test]
fn the_overview_shows_links_alarms_and_backlog() {
    let text = render(&app_on(Screen::Overview));
    assert!(text.contains(">archive"), "{text}");
    assert!(
        text.contains("kafka") && text.contains("paused") && text.contains("1h06m"),
        "{text}"
    );
    assert!(
        text.lines().nth(1).is_some_and(|l| l.ends_with(" 1 ALARM")),
        "{text}"
    );
    assert!(text.contains("ingest 52.5/s"), "{text}");
    assert!(text.contains("driver/mast"), "{text}");
}

#[test]
fn ascii_mode_draws_nothing_a_serial_console_cannot_show() {
    let mut app = app_on(Screen::Overview);
    app.ascii = true;
    for screen in Screen::ALL {
        app.screen = screen;
        let text = render(&app);
        assert!(text.is_ascii(), "{screen:?}:\n{text}");
        assert!(text.contains("+-"), "{text}");
    }
}

#[test]
fn an_action_needs_a_y_and_anything_else_cancels_it() {
    let mut app = app_on(Screen::Overview);
    assert_eq!(app.on_key(KeyCode::Down), None);
    assert_eq!(app.selected_sink().as_deref(), Some("kafka"));
    assert_eq!(app.on_key(KeyCode::Char('r')), None);
    assert!(render(&app).contains("Resume sink kafka?  [y/N]"));
    assert_eq!(app.on_key(KeyCode::Char('n')), None);
    assert_eq!(app.confirm, None);
    assert!(render(&app).contains("cancelled"));

    app.on_key(KeyCode::Char('p'));
    assert_eq!(
        app.on_key(KeyCode::Char('y')),
        Some(Effect::Act(Action::Pause("kafka".into())))
    );
    app.on_key(KeyCode::Char('R'));
    assert_eq!(
        app.on_key(KeyCode::Char('y')),
        Some(Effect::Act(Action::Reload))
    );
    // Sink actions only where sinks are listed.
    assert_eq!(
        app.on_key(KeyCode::Char('2')),
        Some(Effect::Show(Screen::Instruments))
    );
    assert_eq!(app.on_key(KeyCode::Char('f')), None);
    assert_eq!(app.confirm, None);
    assert!(
        app.message
            .as_deref()
            .is_some_and(|m| m.contains("Overview"))
    );
    assert_eq!(app.on_key(KeyCode::Char('q')), Some(Effect::Quit));
}

#[test]
fn screens_cycle_and_the_selection_stays_in_range() {
    let mut app = app_on(Screen::Overview);
    for want in [
        Screen::Instruments,
        Screen::Buffer,
        Screen::Errors,
        Screen::Audit,
        Screen::Workflows,
        Screen::Overview,
    ] {
        assert_eq!(app.on_key(KeyCode::Tab), Some(Effect::Show(want)));
    }
    assert_eq!(
        app.on_key(KeyCode::BackTab),
        Some(Effect::Show(Screen::Workflows))
    );
    assert_eq!(
        app.on_key(KeyCode::Char('6')),
        Some(Effect::Show(Screen::Workflows))
    );
    app.on_key(KeyCode::Down);
    assert_eq!(app.selected, 1, "the second workflow");
    app.on_key(KeyCode::Down);
    assert_eq!(app.selected, 1, "no third");
    app.on_key(KeyCode::Char('2'));
    for _ in 0..10 {
        app.on_key(KeyCode::Down);
    }
    assert_eq!(app.selected, 1);
    let text = render(&app);
    assert!(text.contains(">gps"), "{text}");
    // Fewer drivers in the next snapshot: the selection follows.
    let mut s = snapshot();
    s.drivers.truncate(1);
    app.on_snapshot(s);
    assert_eq!(app.selected, 0);
}

#[test]
fn an_unreachable_agent_is_said_in_the_header() {
    let mut app = App::new(false);
    app.on_snapshot(Snapshot {
        error: Some("cannot reach the agent at /var/lib/skygate/skygate.sock".into()),
        ..Snapshot::default()
    });
    let text = render(&app);
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("AGENT UNREACHABLE")),
        "{text}"
    );
}

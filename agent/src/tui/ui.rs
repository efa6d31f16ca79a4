//! Drawing. Laid out for 80x24 (a serial console) and wider; selection is shown in
//! reverse video and alarms in bold, so nothing depends on colour alone.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};
use serde_json::Value;

use super::app::{App, Screen};
use skygate_buffer::writer_human_bytes as human;
use skygate_model::value_text;

/// Borders a serial console shows whatever its character set.
const ASCII: border::Set = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

fn block<'a>(app: &App, title: &'a str) -> Block<'a> {
    Block::bordered()
        .title(title)
        .border_set(if app.ascii { ASCII } else { border::PLAIN })
}

/// A JSON array of strings as strings (anything else: none).
fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(s).collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `2026-11-22T10:00:00.123Z` -> `11-22 10:00:00` (UTC).
fn short_ts(v: &Value) -> String {
    let t = v.as_str().unwrap_or("-");
    t.get(5..19).unwrap_or(t).replace('T', " ")
}

fn bytes(v: &Value) -> String {
    v.as_u64().map_or("-".into(), human)
}

/// `1h02m`, `3m05s`, `42s`.
fn age(secs: f64) -> String {
    let t = secs.max(0.0) as u64;
    match t {
        0..60 => format!("{t}s"),
        60..3600 => format!("{}m{:02}s", t / 60, t % 60),
        _ => format!("{}h{:02}m", t / 3600, (t % 3600) / 60),
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);
const ALARM: Style = Style::new().add_modifier(Modifier::BOLD).fg(Color::Red);

pub fn draw(f: &mut Frame, app: &App) {
    let [tabs, head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_tabs(f, app, tabs);
    draw_head(f, app, head);
    match app.screen {
        Screen::Overview => overview(f, app, body),
        Screen::Instruments => instruments(f, app, body),
        Screen::Buffer => buffer(f, app, body),
        Screen::Errors => errors(f, app, body),
        Screen::Audit => audit(f, app, body),
        Screen::Workflows => workflows(f, app, body),
    }
    draw_foot(f, app, foot);
    if app.help {
        help(f, app, body);
    }
}

fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (i, sc) in Screen::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, sc.title());
        spans.push(if *sc == app.screen {
            Span::styled(label, SELECTED)
        } else {
            Span::raw(label)
        });
    }
    let gw = app
        .snapshot
        .status
        .as_ref()
        .and_then(|v| v["gateway"].as_str())
        .unwrap_or("?");
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    // The gateway's name matters more than the product's on a narrow console.
    let full = format!("skygate {gw}");
    let right = if used + full.chars().count() <= area.width as usize {
        full
    } else {
        gw.to_string()
    };
    let pad = (area.width as usize).saturating_sub(used + right.chars().count());
    spans.push(Span::raw(" ".repeat(pad)));
    spans.push(Span::styled(right, HEADER));
    f.render_widget(Line::from(spans), area);
}

fn draw_head(f: &mut Frame, app: &App, area: Rect) {
    let snap = &app.snapshot;
    let line = if let Some(e) = &snap.error {
        Line::styled(
            cut(&format!("AGENT UNREACHABLE: {e}"), area.width as usize),
            ALARM,
        )
    } else if let Some(st) = &snap.status {
        let b = &st["buffer"];
        let buffer = if b["degraded"] == true {
            Span::styled("buffer DEGRADED", ALARM)
        } else {
            Span::raw("buffer ok")
        };
        let alarms = snap.errors.as_ref().map_or(0, |e| {
            e.active.iter().filter(|a| a.severity == "error").count()
        });
        Line::from(vec![
            Span::raw(format!(
                "up {}  time {}  ingest {}/s  ",
                age(st["uptime_s"].as_f64().unwrap_or(0.0)),
                s(&st["time_quality"]),
                st["ingest_rate_per_s"]
                    .as_f64()
                    .map_or("-".into(), |r| format!("{r:.1}")),
            )),
            buffer,
            Span::raw(format!("  disk {} free  ", bytes(&st["disk_free_bytes"]))),
            if alarms > 0 {
                Span::styled(
                    format!("{alarms} ALARM{}", if alarms == 1 { "" } else { "S" }),
                    ALARM,
                )
            } else {
                Span::raw("no alarms")
            },
        ])
    } else {
        Line::raw("connecting...")
    };
    f.render_widget(line, area);
}

fn draw_foot(f: &mut Frame, app: &App, area: Rect) {
    let line = if let Some(a) = &app.confirm {
        Line::styled(format!("{}  [y/N]", a.question()), SELECTED)
    } else if let Some(m) = &app.message {
        Line::raw(cut(
            &format!("{m}   (updated {})", app.snapshot.at),
            area.width as usize,
        ))
    } else {
        let keys = match app.screen {
            Screen::Overview => {
                "1-6 screens  Up/Down  p pause  r resume  f flush  R reload  ? help  q quit"
            }
            _ => "1-6/Tab screens  Up/Down select  R reload config  ? help  q quit",
        };
        Line::raw(cut(keys, area.width as usize))
    };
    f.render_widget(line, area);
}

fn table<'a>(
    app: &App,
    title: &'a str,
    header: &[&'a str],
    rows: Vec<Row<'a>>,
    widths: &[Constraint],
) -> Table<'a> {
    Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).style(HEADER))
        .column_spacing(1)
        .block(block(app, title))
}

/// `>name` for the selected row, so selection shows without reverse video too.
fn marker(selected: bool, name: &str) -> String {
    format!("{}{name}", if selected { '>' } else { ' ' })
}

/// Rows `offset..` so that `selected` is visible in `height` rows.
fn window(selected: usize, height: usize) -> usize {
    selected.saturating_sub(height.saturating_sub(1))
}

fn overview(f: &mut Frame, app: &App, area: Rect) {
    let snap = &app.snapshot;
    let n_sinks = snap.sinks.len().max(1) as u16;
    let [links, alarms, buf] = Layout::vertical([
        Constraint::Length(n_sinks + 3),
        Constraint::Min(3),
        Constraint::Length(4),
    ])
    .areas(area);
    let rows = snap
        .sinks
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let state = if x["paused"] == true {
                "paused".to_string()
            } else {
                s(&x["state"])
            };
            let row = Row::new(vec![
                marker(i == app.selected, &s(&x["name"])),
                state,
                s(&x["backlog_records"]),
                bytes(&x["backlog_bytes"]),
                x["oldest_unsent_age_s"].as_f64().map_or("-".into(), age),
                x["drain_rate_per_s"]
                    .as_f64()
                    .map_or("-".into(), |r| format!("{r:.1}")),
                x["last_error"].as_str().unwrap_or("").to_string(),
            ]);
            if i == app.selected {
                row.style(SELECTED)
            } else if x["state"] == "failing" && x["paused"] != true {
                row.style(ALARM)
            } else {
                row
            }
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Links ",
            &[
                " SINK",
                "STATE",
                "BACKLOG",
                "BYTES",
                "OLDEST",
                "RATE/s",
                "LAST ERROR",
            ],
            rows,
            &[
                Constraint::Length(13),
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(9),
                Constraint::Min(10),
            ],
        ),
        links,
    );
    let lines: Vec<Line> = match &snap.errors {
        Some(e) if !e.active.is_empty() => e
            .active
            .iter()
            .map(|a| {
                let text = format!(
                    "{:<7} {:<18} {}",
                    a.severity.to_uppercase(),
                    a.component,
                    a.message
                );
                if a.severity == "error" {
                    Line::styled(text, ALARM)
                } else {
                    Line::raw(text)
                }
            })
            .collect(),
        Some(_) => vec![Line::raw("no active alarms")],
        None => vec![Line::raw("-")],
    };
    f.render_widget(Paragraph::new(lines).block(block(app, " Alarms ")), alarms);
    let text = snap.status.as_ref().map_or_else(
        || vec![Line::raw("-")],
        |st| {
            let b = &st["buffer"];
            vec![
                Line::raw(format!(
                    "{} records, {}; last seq {}",
                    s(&b["records"]),
                    bytes(&b["bytes"]),
                    s(&b["last_seq"])
                )),
                Line::raw(format!(
                    "{} evicted in {} gaps; ingest {} readings, {} unrouted",
                    s(&b["records_evicted"]),
                    s(&b["gaps"]),
                    s(&st["ingest"]["readings"]),
                    s(&st["ingest"]["unrouted"])
                )),
            ]
        },
    );
    f.render_widget(Paragraph::new(text).block(block(app, " Buffer ")), buf);
}

/// Workflows: what each takes and makes, and what went wrong; the selected one's chain.
fn workflows(f: &mut Frame, app: &App, area: Rect) {
    let list = &app.snapshot.workflows;
    let list_h = (list.len().max(1) as u16 + 3).min(area.height / 2);
    let [top, detail] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(3)]).areas(area);
    let visible = list_h.saturating_sub(3) as usize;
    let offset = window(app.selected, visible);
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let rows = list
        .iter()
        .enumerate()
        .skip(offset)
        .map(|(i, w)| {
            let inputs = strings(&w["input"]);
            let row = Row::new(vec![
                marker(i == app.selected, w["name"].as_str().unwrap_or("?")),
                inputs.join(","),
                s(&w["output_stream"]),
                n(&w["records_in"]).to_string(),
                n(&w["records_out"]).to_string(),
                n(&w["errors"]).to_string(),
                n(&w["dead_lettered"]).to_string(),
            ]);
            match (i == app.selected, n(&w["dead_lettered"]) > 0) {
                (true, _) => row.style(SELECTED),
                (false, true) => row.style(ALARM),
                _ => row,
            }
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Workflows ",
            &[" WORKFLOW", "INPUT", "OUTPUT", "IN", "OUT", "ERR", "DEAD"],
            rows,
            &[
                Constraint::Length(13),
                Constraint::Length(14),
                Constraint::Length(14),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Min(5),
            ],
        ),
        top,
    );
    let Some(w) = list.get(app.selected) else {
        f.render_widget(
            Paragraph::new("no workflows (config key `workflows`)").block(block(app, " Steps ")),
            detail,
        );
        return;
    };
    let steps = strings(&w["steps"]);
    let sinks = strings(&w["sinks"]);
    let mut lines = vec![
        Line::from(format!("steps  {}", steps.join(" -> "))),
        Line::from(format!(
            "out    {} -> {}",
            s(&w["output_stream"]),
            if sinks.is_empty() {
                "(config routes)".into()
            } else {
                sinks.join(", ")
            }
        )),
        Line::from(format!("file   {}", s(&w["file"]))),
    ];
    if let Some(e) = w["last_error"].as_str() {
        let room = detail.width.saturating_sub(10) as usize;
        lines.push(Line::styled(format!("error  {}", cut(e, room)), ALARM));
    }
    let title = format!(" {} ", w["name"].as_str().unwrap_or("?"));
    f.render_widget(Paragraph::new(lines).block(block(app, &title)), detail);
}

fn instruments(f: &mut Frame, app: &App, area: Rect) {
    let drivers = &app.snapshot.drivers;
    let list_h = (drivers.len().max(1) as u16 + 3).min(area.height / 2);
    let [list, detail] =
        Layout::vertical([Constraint::Length(list_h), Constraint::Min(3)]).areas(area);
    let visible = list_h.saturating_sub(3) as usize;
    let offset = window(app.selected, visible);
    let rows = drivers
        .iter()
        .enumerate()
        .skip(offset)
        .map(|(i, d)| {
            let row = Row::new(vec![
                marker(i == app.selected, &d.name),
                d.kind.clone(),
                d.stream.clone(),
                d.state.clone(),
                d.readings.to_string(),
                d.errors.to_string(),
                d.last_error.clone().unwrap_or_default(),
            ]);
            match (i == app.selected, d.state.as_str()) {
                (true, _) => row.style(SELECTED),
                (false, "failing" | "failed") => row.style(ALARM),
                _ => row,
            }
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Instruments ",
            &[
                " DRIVER",
                "KIND",
                "STREAM",
                "STATE",
                "READINGS",
                "ERR",
                "LAST ERROR",
            ],
            rows,
            &[
                Constraint::Length(13),
                Constraint::Length(6),
                Constraint::Length(15),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Min(10),
            ],
        ),
        list,
    );
    let Some(d) = drivers.get(app.selected) else {
        f.render_widget(
            Paragraph::new("no drivers").block(block(app, " Channels ")),
            detail,
        );
        return;
    };
    let mut rows: Vec<Row> = d
        .channels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(ch, v)| {
            let q = match v["quality_reason"].as_str() {
                Some(r) => format!("{}: {r}", s(&v["quality"])),
                None => s(&v["quality"]),
            };
            let row = Row::new(vec![ch.clone(), value_text(v), q, s(&v["time_quality"])]);
            if v["quality"] == "bad" {
                row.style(ALARM)
            } else {
                row
            }
        })
        .collect();
    for (k, n) in &d.counters {
        rows.push(Row::new(vec![
            format!("({k})"),
            n.to_string(),
            String::new(),
            String::new(),
        ]));
    }
    let title = format!(" {} - last value per channel ", d.name);
    let mut detail_block = block(app, &title);
    if let Some(e) = &d.last_error {
        let room = detail.width.saturating_sub(16) as usize;
        detail_block = detail_block.title_bottom(format!(" last error: {} ", cut(e, room)));
    }
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(22),
                Constraint::Length(22),
                Constraint::Min(10),
                Constraint::Length(13),
            ],
        )
        .header(Row::new(vec!["CHANNEL", "VALUE", "QUALITY", "TIME"]).style(HEADER))
        .block(detail_block),
        detail,
    );
}

fn buffer(f: &mut Frame, app: &App, area: Rect) {
    let Some(b) = &app.snapshot.buffer else {
        f.render_widget(
            Paragraph::new("reading buffer statistics...").block(block(app, " Buffer ")),
            area,
        );
        return;
    };
    let [summary, sinks, gaps] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Length(b["sinks"].as_array().map_or(1, Vec::len) as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(area);
    let status = if b["status"]["degraded"] == true {
        Span::styled("DEGRADED", ALARM)
    } else {
        Span::raw("ok")
    };
    let lines = vec![
        Line::from(vec![
            Span::raw(format!(
                "{} records ({}), seqs {}..{}  status ",
                s(&b["records"]),
                bytes(&b["record_bytes"]),
                s(&b["first_seq"]),
                s(&b["last_seq"])
            )),
            status,
        ]),
        Line::raw(format!(
            "database {}, WAL {}, spool {} files {}",
            bytes(&b["db_bytes"]),
            bytes(&b["wal_bytes"]),
            s(&b["spool_files"]),
            bytes(&b["spool_bytes"])
        )),
        Line::raw(format!(
            "oldest {}  disk free {}  quarantined {}",
            s(&b["oldest_ts"]),
            bytes(&b["disk_available_bytes"]),
            s(&b["quarantined"])
        )),
        Line::raw(format!(
            "gaps {}: {} records lost, {} uncounted",
            s(&b["gaps"]["total"]),
            s(&b["gaps"]["records_lost"]),
            s(&b["gaps"]["uncounted"])
        )),
    ];
    f.render_widget(Paragraph::new(lines).block(block(app, " Buffer ")), summary);
    let rows = b["sinks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            Row::new(vec![
                s(&x["sink"]),
                s(&x["pending_records"]),
                bytes(&x["pending_bytes"]),
                s(&x["oldest_pending_seq"]),
                short_ts(&x["oldest_pending_ingest"]),
                s(&x["gaps_pending"]),
            ])
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Pending per sink ",
            &[
                "SINK",
                "RECORDS",
                "BYTES",
                "OLDEST SEQ",
                "OLDEST (UTC)",
                "GAPS",
            ],
            rows,
            &[
                Constraint::Length(12),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Min(20),
                Constraint::Length(5),
            ],
        ),
        sinks,
    );
    let rows = b["gaps"]["recent"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            Row::new(vec![
                s(&g["stream"]),
                format!("{}..{}", s(&g["first_seq"]), s(&g["last_seq"])),
                s(&g["count"]),
                s(&g["reason"]),
            ])
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Recent gaps ",
            &["STREAM", "SEQS", "LOST", "REASON"],
            rows,
            &[
                Constraint::Length(16),
                Constraint::Length(17),
                Constraint::Length(7),
                Constraint::Min(10),
            ],
        ),
        gaps,
    );
}

fn errors(f: &mut Frame, app: &App, area: Rect) {
    let Some(e) = &app.snapshot.errors else {
        f.render_widget(Paragraph::new("-").block(block(app, " Errors ")), area);
        return;
    };
    let active_h = (e.active.len().max(1) as u16 + 2).min(area.height / 2);
    let [active, recent] =
        Layout::vertical([Constraint::Length(active_h), Constraint::Min(3)]).areas(area);
    let lines: Vec<Line> = if e.active.is_empty() {
        vec![Line::raw("no active alarms")]
    } else {
        e.active
            .iter()
            .map(|a| {
                let t = format!(
                    "{:<7} {:<18} {}",
                    a.severity.to_uppercase(),
                    a.component,
                    a.message
                );
                if a.severity == "error" {
                    Line::styled(t, ALARM)
                } else {
                    Line::raw(t)
                }
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(block(app, " Active alarms ")),
        active,
    );
    let rows = e
        .recent
        .iter()
        .map(|r| {
            let msg = if r.count > 1 {
                format!("{} (x{})", r.message, r.count)
            } else {
                r.message.clone()
            };
            Row::new(vec![
                short_ts(&Value::String(r.ts.clone())),
                r.component.clone(),
                msg,
            ])
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Recent errors (newest first) ",
            &["TIME (UTC)", "COMPONENT", "MESSAGE"],
            rows,
            &[
                Constraint::Length(14),
                Constraint::Length(18),
                Constraint::Min(10),
            ],
        ),
        recent,
    );
}

fn audit(f: &mut Frame, app: &App, area: Rect) {
    // The API lists oldest first; the newest matter most here.
    let rows = app
        .snapshot
        .audit
        .iter()
        .rev()
        .map(|r| {
            Row::new(vec![
                short_ts(&r["ts"]),
                s(&r["actor"]),
                s(&r["action"]),
                s(&r["target"]),
                s(&r["result"]),
            ])
        })
        .collect();
    f.render_widget(
        table(
            app,
            " Audit trail (newest first) ",
            &["TIME (UTC)", "ACTOR", "ACTION", "TARGET", "RESULT"],
            rows,
            &[
                Constraint::Length(14),
                Constraint::Length(14),
                Constraint::Length(14),
                Constraint::Length(16),
                Constraint::Min(8),
            ],
        ),
        area,
    );
}

fn help(f: &mut Frame, app: &App, area: Rect) {
    let w = area.width.min(60);
    let h = area.height.min(14);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let lines = vec![
        Line::raw("1..5, Tab, Left/Right   switch screen"),
        Line::raw("Up/Down, j/k            select a sink or driver"),
        Line::raw("p / r / f               pause / resume / flush the sink"),
        Line::raw("R                       reload the configuration"),
        Line::raw("y                       confirm; any other key cancels"),
        Line::raw("q, Esc                  quit (the agent keeps running)"),
        Line::raw(""),
        Line::raw("Read-only except the confirmed actions; every action"),
        Line::raw("is recorded in the audit trail."),
    ];
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(lines).block(block(app, " Help ")), r);
}

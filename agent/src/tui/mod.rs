//! `skygate tui`: the maintenance screen for a technician at the gateway.
//!
//! A separate process that talks only to the control API, like the CLI: whatever happens
//! to it (a crash, a hung terminal, a pulled serial cable) cannot touch data collection.
//!
//! Two threads: the UI thread draws and reads keys; the fetcher thread reads the API once
//! a second (the buffer scan and the audit rows only while their screen shows) and sends actions the
//! operator confirmed. They talk over channels, so a slow or dead agent never freezes the
//! keyboard; the header says when the agent cannot be reached.

mod app;
mod ui;

#[cfg(test)]
mod tests;

use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

use ratatui::crossterm::event::{self, Event, KeyEventKind};

pub use app::{Action, App, Effect, Screen, Snapshot};
use skygate_control::client::Endpoint;

/// How often the agent is read.
const REFRESH: Duration = Duration::from_secs(1);
/// The buffer statistics scan the database: read them less often.
const BUFFER_REFRESH: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

enum ToFetcher {
    Show(Screen),
    Act(Action),
}

enum ToUi {
    Snapshot(Box<Snapshot>),
    Done(String),
}

/// Runs the TUI until the operator quits.
pub fn run(endpoint: Endpoint, ascii: bool) -> std::io::Result<()> {
    let (to_fetcher, from_ui) = mpsc::channel();
    let (to_ui, from_fetcher) = mpsc::channel();
    std::thread::Builder::new()
        .name("tui-fetch".into())
        .spawn(move || fetcher(endpoint, from_ui, to_ui))?;
    // Restores the terminal on panic too.
    let mut terminal = ratatui::try_init()?;
    let mut app = App::new(ascii);
    let result = (|| -> std::io::Result<()> {
        loop {
            while let Ok(msg) = from_fetcher.try_recv() {
                match msg {
                    ToUi::Snapshot(s) => app.on_snapshot(*s),
                    ToUi::Done(m) => app.message = Some(m),
                }
            }
            terminal.draw(|f| ui::draw(f, &app))?;
            if !event::poll(Duration::from_millis(200))? {
                continue;
            }
            let Event::Key(key) = event::read()? else {
                continue;
            };
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match app.on_key(key.code) {
                Some(Effect::Quit) => return Ok(()),
                Some(Effect::Act(a)) => {
                    let _ = to_fetcher.send(ToFetcher::Act(a));
                }
                Some(Effect::Show(s)) => {
                    let _ = to_fetcher.send(ToFetcher::Show(s));
                }
                None => {}
            }
        }
    })();
    ratatui::restore();
    result
}

fn fetcher(endpoint: Endpoint, from_ui: mpsc::Receiver<ToFetcher>, to_ui: mpsc::Sender<ToUi>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        let _ = to_ui.send(ToUi::Done("cannot start the fetcher".into()));
        return;
    };
    let mut screen = Screen::Overview;
    let mut buffer: Option<(Instant, serde_json::Value)> = None;
    loop {
        let mut snap = Snapshot {
            at: chrono::Local::now().format("%H:%M:%S").to_string(),
            ..Snapshot::default()
        };
        let want_buffer = screen == Screen::Buffer
            && buffer
                .as_ref()
                .is_none_or(|(t, _)| t.elapsed() >= BUFFER_REFRESH);
        match rt.block_on(read_all(&endpoint, screen, want_buffer)) {
            Ok(mut s) => {
                match s.buffer.take() {
                    Some(b) => buffer = Some((Instant::now(), b)),
                    None if screen != Screen::Buffer => buffer = None,
                    None => {}
                }
                s.buffer = buffer.as_ref().map(|(_, b)| b.clone());
                s.at = snap.at;
                snap = s;
            }
            Err(e) => snap.error = Some(e),
        }
        if to_ui.send(ToUi::Snapshot(Box::new(snap))).is_err() {
            return;
        }
        // Wait for the next round, or act on the operator at once (and read again
        // right after, so the screen shows the effect).
        match from_ui.recv_timeout(REFRESH) {
            Ok(ToFetcher::Show(s)) => screen = s,
            Ok(ToFetcher::Act(a)) => {
                let (method, path) = a.request();
                let msg = match rt.block_on(timed(endpoint.request(method, &path))) {
                    Ok(_) => format!("{path}: done"),
                    Err(e) => format!("{path}: {e}"),
                };
                if to_ui.send(ToUi::Done(msg)).is_err() {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, skygate_control::client::ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// Reads what the screens show; the buffer scan and the audit rows only for the screen
/// that shows them.
async fn read_all(ep: &Endpoint, screen: Screen, with_buffer: bool) -> Result<Snapshot, String> {
    async fn get<T: serde::de::DeserializeOwned>(ep: &Endpoint, path: &str) -> Result<T, String> {
        let body = timed(ep.request("GET", path)).await?;
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }
    let (status, sinks, drivers, errors, workflows) = tokio::join!(
        get(ep, "/v1/status"),
        get(ep, "/v1/sinks"),
        get(ep, "/v1/drivers"),
        get(ep, "/v1/errors"),
        get::<Vec<serde_json::Value>>(ep, "/v1/workflows"),
    );
    let audit = if screen == Screen::Audit {
        get(ep, "/v1/audit?limit=100").await?
    } else {
        Vec::new()
    };
    let buffer = if with_buffer {
        get(ep, "/v1/buffer").await.ok()
    } else {
        None
    };
    Ok(Snapshot {
        status: Some(status?),
        sinks: sinks?,
        drivers: drivers?,
        errors: Some(errors?),
        // An older agent without workflows answers 404: nothing to show.
        workflows: workflows.unwrap_or_default(),
        buffer,
        audit,
        ..Snapshot::default()
    })
}

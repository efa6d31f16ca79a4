//! The TUI's state and what each key does. Pure: no terminal and no network here, so
//! the tests drive it with keys and snapshots.

use ratatui::crossterm::event::KeyCode;
use serde_json::Value;

use skygate_control::views::{DriverReply, ErrorsReply};

/// What the fetcher last read from the agent.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: Option<Value>,
    pub sinks: Vec<Value>,
    pub drivers: Vec<DriverReply>,
    pub errors: Option<ErrorsReply>,
    /// `/v1/buffer` (read only while the buffer screen shows: it scans the buffer).
    pub buffer: Option<Value>,
    pub audit: Vec<Value>,
    /// `/v1/workflows`.
    pub workflows: Vec<Value>,
    /// Local time of the read, `HH:MM:SS`.
    pub at: String,
    /// Why the last read failed (the agent stopped, the socket is gone, ...).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Overview,
    Instruments,
    Buffer,
    Errors,
    Audit,
    Workflows,
}

impl Screen {
    pub const ALL: [Screen; 6] = [
        Screen::Overview,
        Screen::Instruments,
        Screen::Buffer,
        Screen::Errors,
        Screen::Audit,
        Screen::Workflows,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Instruments => "Instruments",
            Screen::Buffer => "Buffer",
            Screen::Errors => "Errors",
            Screen::Audit => "Audit",
            // Short: six tabs and the gateway's name share 80 columns.
            Screen::Workflows => "Flows",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// An operator action; each needs a `y` to confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pause(String),
    Resume(String),
    Flush(String),
    Reload,
}

impl Action {
    pub fn question(&self) -> String {
        match self {
            Action::Pause(s) => format!("Pause sink {s}? Its backlog waits in the buffer."),
            Action::Resume(s) => format!("Resume sink {s}?"),
            Action::Flush(s) => format!("Flush sink {s} now?"),
            Action::Reload => "Reload the configuration?".into(),
        }
    }

    /// Method and path of the control API call.
    pub fn request(&self) -> (&'static str, String) {
        match self {
            Action::Pause(s) => ("POST", format!("/v1/sinks/{s}/pause")),
            Action::Resume(s) => ("POST", format!("/v1/sinks/{s}/resume")),
            Action::Flush(s) => ("POST", format!("/v1/sinks/{s}/flush")),
            Action::Reload => ("POST", "/v1/reload".into()),
        }
    }
}

/// What the UI loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    Act(Action),
    /// The screen changed: the fetcher reads what it needs at once.
    Show(Screen),
}

#[derive(Debug)]
pub struct App {
    pub screen: Screen,
    /// Selected row of the screen's main list (sinks, drivers, workflows).
    pub selected: usize,
    pub confirm: Option<Action>,
    /// The outcome of the last action, or a hint; shown in the footer.
    pub message: Option<String>,
    pub help: bool,
    pub snapshot: Snapshot,
    /// Plain ASCII borders, for serial consoles.
    pub ascii: bool,
}

impl App {
    pub fn new(ascii: bool) -> Self {
        Self {
            screen: Screen::Overview,
            selected: 0,
            confirm: None,
            message: None,
            help: false,
            snapshot: Snapshot::default(),
            ascii,
        }
    }

    fn rows(&self) -> usize {
        match self.screen {
            Screen::Overview => self.snapshot.sinks.len(),
            Screen::Instruments => self.snapshot.drivers.len(),
            Screen::Workflows => self.snapshot.workflows.len(),
            _ => 0,
        }
    }

    pub fn selected_sink(&self) -> Option<String> {
        if self.screen != Screen::Overview {
            return None;
        }
        self.snapshot.sinks.get(self.selected)?["name"]
            .as_str()
            .map(str::to_string)
    }

    fn show(&mut self, screen: Screen) -> Option<Effect> {
        self.screen = screen;
        self.selected = 0;
        Some(Effect::Show(screen))
    }

    pub fn on_key(&mut self, key: KeyCode) -> Option<Effect> {
        if let Some(action) = self.confirm.take() {
            return match key {
                KeyCode::Char('y' | 'Y') => {
                    self.message = Some(format!("{}: sent", action.request().1));
                    Some(Effect::Act(action))
                }
                _ => {
                    self.message = Some("cancelled".into());
                    None
                }
            };
        }
        if self.help {
            self.help = false;
            return None;
        }
        let n = Screen::ALL.len();
        match key {
            KeyCode::Char('q') | KeyCode::Esc => Some(Effect::Quit),
            KeyCode::Char('?') | KeyCode::Char('h') => {
                self.help = true;
                None
            }
            KeyCode::Char(c @ '1'..='6') => self.show(Screen::ALL[c as usize - '1' as usize]),
            KeyCode::Tab | KeyCode::Right => self.show(Screen::ALL[(self.screen.index() + 1) % n]),
            KeyCode::BackTab | KeyCode::Left => {
                self.show(Screen::ALL[(self.screen.index() + n - 1) % n])
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.selected + 1 < self.rows() {
                    self.selected += 1;
                }
                None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                None
            }
            KeyCode::Char(c @ ('p' | 'r' | 'f')) => {
                match self.selected_sink() {
                    Some(s) => {
                        self.confirm = Some(match c {
                            'p' => Action::Pause(s),
                            'r' => Action::Resume(s),
                            _ => Action::Flush(s),
                        })
                    }
                    None => {
                        self.message = Some("select a sink on the Overview screen (1) first".into())
                    }
                }
                None
            }
            KeyCode::Char('R') => {
                self.confirm = Some(Action::Reload);
                None
            }
            _ => None,
        }
    }

    pub fn on_snapshot(&mut self, s: Snapshot) {
        self.snapshot = s;
        self.selected = self.selected.min(self.rows().saturating_sub(1));
    }
}

//! The real `skygate tui` in a real terminal (tmux), against a running agent: screens
//! show the agent's state, and a confirmed pause reaches the agent.

use std::process::Command;
use std::time::Duration;

use skygate_e2e::{Agent, sim_rig, skygate, skygate_bin, wait_until};

/// A private tmux server (its own socket), killed on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux (scripts/setup installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "tui", keys]);
    }

    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            last = self.screen();
            if cond(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("tui: {what} never showed; the screen was:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

#[test]
fn the_tui_shows_links_and_instruments_and_a_confirmed_pause_reaches_the_agent() {
    let (_root, data, cfg) = sim_rig("gw-tui", 2, 20);
    let mut a = Agent::start_serving(&cfg, &data);
    let tmux = Tmux(format!("skygate-test-{}", std::process::id()));
    let cmd = format!(
        "{} tui --data-dir {}",
        skygate_bin().display(),
        data.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);

    let s = tmux.wait_for("the overview with the archive link", |s| {
        s.contains("skygate gw-tui") && s.contains(">archive") && s.contains("connected")
    });
    assert!(
        s.lines().count() <= 24 && s.lines().all(|l| l.chars().count() <= 80),
        "{s}"
    );

    tmux.keys("2");
    tmux.wait_for("the instruments screen", |s| {
        s.contains(">skygate") && s.contains(" wx ")
    });
    // Drivers are listed by name: the heartbeat (`skygate`) first, then wx.
    tmux.keys("Down");
    tmux.wait_for("wx selected, with its channels", |s| {
        s.contains(">wx") && s.contains("c0") && s.contains("c1")
    });

    tmux.keys("1");
    tmux.keys("p");
    tmux.wait_for("the confirmation prompt", |s| {
        s.contains("Pause sink archive?") && s.contains("[y/N]")
    });
    tmux.keys("y");
    tmux.wait_for("the link shown paused", |s| {
        s.lines()
            .any(|l| l.contains(">archive") && l.contains("paused"))
    });
    let out = skygate(&[
        "sinks",
        "--json",
        "--data-dir",
        data.to_str().expect("utf8"),
    ]);
    let sinks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(sinks[0]["paused"], true);

    tmux.keys("5");
    tmux.wait_for("the pause in the audit screen", |s| {
        s.contains("sink.pause") && s.contains("archive")
    });
    tmux.keys("q");
    wait_until(Duration::from_secs(10), "the tui to exit", || {
        !tmux.run(&["list-sessions"]).contains("tui")
    });
    // The TUI is only a client: the agent goes on.
    assert!(a.is_running());
    assert_eq!(a.stop(), Some(0));
}

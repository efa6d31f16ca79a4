//! The dependency picture in `agent/README.md` is the crates' real dependency graph: every
//! arrow is a normal dependency between workspace crates declared by an `agent/` crate, and
//! every such dependency is an arrow. Read from `cargo metadata`, so a crate that gains (or
//! loses) a dependency fails here until the picture says so.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

type Edges = BTreeSet<(String, String)>;

/// `a --> b & c` lines of the README's first Mermaid block; a bare `a` names a crate with no
/// workspace dependencies.
fn picture(readme: &str) -> (Edges, BTreeSet<String>) {
    let block = readme
        .split("```mermaid")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("agent/README.md has a ```mermaid block");
    let (mut edges, mut nodes) = (Edges::new(), BTreeSet::new());
    for line in block.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("graph") || line.starts_with("%%") {
            continue;
        }
        let (from, to) = line.split_once("-->").unwrap_or((line, ""));
        let from = from.trim().to_string();
        for dep in to.split('&').map(str::trim).filter(|d| !d.is_empty()) {
            nodes.insert(dep.to_string());
            edges.insert((from.clone(), dep.to_string()));
        }
        nodes.insert(from);
    }
    (edges, nodes)
}

/// Short names as the picture writes them: `skygate-buffer` is `buffer`, `skygate-agent`
/// `agent`, `skygate-fn` `fn`.
fn short(name: &str) -> String {
    name.strip_prefix("skygate-").unwrap_or(name).to_string()
}

/// The agent crates (manifests under `agent/`) and their normal dependencies on workspace
/// crates.
fn actual(workspace: &Path) -> (Edges, BTreeSet<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let agent_dir = workspace.join("agent");
    let (mut edges, mut nodes) = (Edges::new(), BTreeSet::new());
    for p in packages {
        let manifest = Path::new(p["manifest_path"].as_str().expect("manifest_path"));
        if !manifest.starts_with(&agent_dir) {
            continue;
        }
        let name = short(p["name"].as_str().expect("name"));
        for d in p["dependencies"].as_array().expect("dependencies") {
            let dep = d["name"].as_str().expect("dependency name");
            // Normal dependencies only: dev-dependencies (test fixtures) do not make a
            // direction.
            if d["kind"].is_null() && members.contains(dep) {
                edges.insert((name.clone(), short(dep)));
            }
        }
        nodes.insert(name);
    }
    (edges, nodes)
}

#[test]
fn the_readme_picture_is_the_crate_graph() {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(agent.join("README.md")).expect("agent/README.md");
    let (drawn, drawn_nodes) = picture(&readme);
    let (real, crates) = actual(agent.parent().expect("workspace root"));

    let undrawn: Vec<_> = real.difference(&drawn).collect();
    let stale: Vec<_> = drawn.difference(&real).collect();
    assert!(
        undrawn.is_empty() && stale.is_empty(),
        "agent/README.md's picture is not the crate graph:\n  \
         dependencies it does not show (from -> to): {undrawn:?}\n  \
         arrows no Cargo.toml declares: {stale:?}"
    );
    let missing: Vec<_> = crates.difference(&drawn_nodes).collect();
    assert!(
        missing.is_empty(),
        "crates the picture does not name: {missing:?}"
    );
}

#[test]
fn only_the_pipeline_and_the_binary_depend_on_config() {
    let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (real, _) = actual(agent.parent().expect("workspace root"));
    let on_config: Vec<_> = real
        .iter()
        .filter(|(_, to)| to == "config")
        .map(|(from, _)| from.as_str())
        .collect();
    // Components own their settings; config converts into them. A component that needs
    // config back would be the knot this layout removed.
    assert_eq!(
        on_config,
        ["agent", "pipeline"],
        "crates that depend on config"
    );
}

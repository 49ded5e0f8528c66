//! The documentation's links: every relative link in the README, `docs/` and
//! `bench/RESULTS.md` names a file that exists, and an anchor names a heading in it (GitHub's
//! slugs). The README stays a front door (at most 300 lines), and its rule-file example is valid.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// `[text](target)` links, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
        }
        if code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_is_alive() {
    let root = workspace();
    let mut pages = vec![root.join("README.md"), root.join("bench/RESULTS.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(path);
        }
    }
    let mut dead = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                dead.push(format!("{}: {link}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty() {
                let t = std::fs::read_to_string(&target).unwrap_or_default();
                if !anchors(&t).iter().any(|a| a == anchor) {
                    dead.push(format!("{}: {link}: no such heading", page.display()));
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines: move reference to docs/"
    );
    // The two commands, exactly as a newcomer types them.
    assert!(readme.contains("\n    ./examples/shop/run.sh\n"));
    assert!(readme.contains("\n    cargo test --workspace\n"));
}

/// The rule file the README shows is valid as written.
#[test]
fn the_readme_rule_file_is_valid() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let (_, rest) = readme
        .split_once("## A rule file\n\n```yaml\n")
        .expect("README has a rule-file example");
    let (rules, _) = rest.split_once("```").unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("strangler.yaml"),
        "listen: [\"127.0.0.1:8080\"]\nlegacy: { address: \"127.0.0.1:8081\" }\nservices:\n  orders: { address: \"127.0.0.1:8082\" }\nrules: rules\nkinesis: { region: us-east-1 }\n",
    )
    .unwrap();
    std::fs::create_dir(d.path().join("rules")).unwrap();
    std::fs::write(d.path().join("rules/orders.yaml"), rules).unwrap();
    let out = std::process::Command::new(strangler_tests::binary())
        .args(["check", "strangler.yaml"])
        .current_dir(d.path())
        .output()
        .unwrap();
    let ok = out.status.success();
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(ok && out.contains("ok: strangler.yaml"), "{out}{err}");
    assert!(out.contains("; 2 route(s) in 1 rule file(s)"), "{out}");
    assert!(!err.contains("warning"), "{err}");
}

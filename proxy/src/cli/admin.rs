//! The CLI's side of the admin API: one request to the listener the config names, the answer
//! as JSON or its error. Every call sends the admin token when the config names one (from that
//! variable); commands that change anything also send the user's name for the audit log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::config::Config;

/// `method path` on `cfg`'s admin listener, with a JSON `body` when given.
pub fn call(cfg: &Config, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let admin = cfg.admin;
    let limit = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&admin, limit)
        .with_context(|| format!("cannot reach the admin API at {admin}: is the proxy running?"))?;
    s.set_read_timeout(Some(limit))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    // Reading stored data wants the token too (mismatches, audit, replays…): sent with every
    // call when the config names one and it is set; commands fail without it.
    if let Some(var) = &cfg.admin_token_env {
        match std::env::var(var) {
            Ok(token) => head.push_str(&format!("Authorization: Bearer {}\r\n", token.trim())),
            Err(_) if method == "GET" => {}
            Err(_) => bail!("{var} (admin_token_env) is not set: the admin API wants the token"),
        }
    }
    if method != "GET" {
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
        head.push_str(&format!("x-strangler-actor: {user}\r\n"));
    }
    let payload = body.map(Value::to_string).unwrap_or_default();
    head.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    write!(s, "{head}\r\n{payload}")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the answer of {admin}{path}"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{admin}{path}: not an HTTP answer");
    };
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    let v: Value =
        serde_json::from_str(body).with_context(|| format!("{admin}{path}: not JSON"))?;
    if !status.starts_with('2') {
        bail!(
            "{method} {path}: {status} {}",
            v["error"].as_str().unwrap_or("error")
        );
    }
    Ok(v)
}

//! The console: one page on the admin listener (`GET /`), with its script and style, built into
//! the binary (`console/`). It reads the same JSON endpoints as the CLI and sends commands with
//! the admin token, which the person types once (kept in the browser tab only). Nothing is
//! fetched from anywhere else: the Content-Security-Policy allows this listener only, and the
//! page may not be framed (its buttons move traffic).

use http::{Response, StatusCode};

const PAGE: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Which file of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asset {
    Page,
    Script,
    Style,
}

pub(super) fn serve(asset: Asset) -> Response<Vec<u8>> {
    let (content_type, body) = match asset {
        Asset::Page => ("text/html; charset=utf-8", PAGE),
        Asset::Script => ("text/javascript; charset=utf-8", SCRIPT),
        Asset::Style => ("text/css; charset=utf-8", STYLE),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-cache")
        .header(http::header::CONTENT_SECURITY_POLICY, CSP)
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(http::header::X_FRAME_OPTIONS, "DENY")
        .header(http::header::REFERRER_POLICY, "no-referrer")
        .body(body.as_bytes().to_vec())
        .expect("static response parts are valid")
}

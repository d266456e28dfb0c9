//! The web console (`/console/`): static assets built from `console/src`
//! (`npm run build` in `console/`, committed in `console/dist`) and compiled
//! into the binary. It talks to the same API as everyone else.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};

use super::Body;

const INDEX: &[u8] = include_bytes!("../../../console/dist/index.html");
const SCRIPT: &[u8] = include_bytes!("../../../console/dist/console.js");
const STYLE: &[u8] = include_bytes!("../../../console/dist/console.css");
const ICON: &[u8] = include_bytes!("../../../console/dist/favicon.svg");

/// Scripts and styles from the host only; images from the host (signed URLs).
const CSP: &str = "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub(super) fn serve(path: &str) -> Response<Body> {
    let (body, kind): (&'static [u8], &str) = match path {
        "/console" => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            resp.headers_mut().insert(LOCATION, HeaderValue::from_static("/console/"));
            return resp;
        }
        "/console/" | "/console/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/console/console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/console/console.css" => (STYLE, "text/css; charset=utf-8"),
        "/console/favicon.svg" => (ICON, "image/svg+xml"),
        _ => (b"not found" as &[u8], "text/plain"),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    if kind == "text/plain" {
        *resp.status_mut() = StatusCode::NOT_FOUND;
    }
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_str(kind).expect("ascii"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    resp
}

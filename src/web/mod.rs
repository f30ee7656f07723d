//! The web layer under `napster daemon`'s API and page, on the project's HTTP server
//! ([`crate::http`]), with no knowledge of what the API does: the token ([`token`]), the
//! checks every request passes before any route sees it ([`Guard`]: `Host` against DNS rebinding, `Origin`
//! against cross-site requests, the token), the page's embedded files ([`assets`]) and
//! Server-Sent Events ([`sse`]).
//!
//! What a local web service must resist, and where it is resisted:
//! - DNS rebinding: a hostile page whose name resolves to 127.0.0.1 is same-origin with
//!   itself, not with us; its requests carry its own name in `Host`, which must be one
//!   of ours ([`Guard::check_host`]).
//! - Cross-site requests: a state change needs a method other than GET, an `Origin`
//!   (when the browser sends one) that is ours, and the token; the cookie that carries
//!   the token in the browser is `SameSite=Strict`; no CORS header is ever sent.
//! - Path traversal: nothing is read from disk; only [`assets`]' embedded files, looked
//!   up by exact path, are served.

pub mod assets;
pub mod sse;
pub mod token;

use std::net::SocketAddr;

use crate::http::{self, Request, Response, StatusCode, header};
pub use token::Token;

/// The cookie that keeps the token in the browser.
pub const COOKIE: &str = "napster_token";

/// What guards the API: which names this server answers to, and its token.
pub struct Guard {
    token: Token,
    /// `Host` values accepted, lowercase.
    hosts: Vec<String>,
    /// `Origin` values accepted, lowercase.
    origins: Vec<String>,
}

/// A JSON error answer in the shape of the CLI's (`{"error": {"code", "message"}}`).
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    http::answer(status, "application/json", body.to_string())
}

/// The query's `key=value` pairs, decoded.
pub fn query(request: &Request) -> Vec<(String, String)> {
    let query = request.uri().query().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The value of the query's `key`, if given.
pub fn query_value(request: &Request, key: &str) -> Option<String> {
    query(request)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

impl Guard {
    /// A guard for a server on `listen` (its real address, port 0 resolved) with `token`;
    /// `reverse_proxy` is the public host name a TLS proxy forwards (empty: none).
    pub fn new(token: Token, listen: SocketAddr, reverse_proxy: &str) -> Guard {
        let port = listen.port();
        let mut hosts = vec![
            listen.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        let mut origins: Vec<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
        if !reverse_proxy.is_empty() {
            let proxy = reverse_proxy.to_lowercase();
            hosts.push(proxy.clone());
            hosts.push(format!("{proxy}:443"));
            origins.push(format!("https://{proxy}"));
        }
        hosts.dedup();
        Guard {
            token,
            hosts,
            origins,
        }
    }

    /// The `Host` header must name this server: a page on another name (DNS rebinding)
    /// is refused before anything else.
    pub fn check_host(&self, request: &Request) -> Result<(), Box<Response>> {
        let host = header_text(request, header::HOST)
            .map(str::to_lowercase)
            .unwrap_or_default();
        if self.hosts.contains(&host) {
            return Ok(());
        }
        Err(Box::new(error(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            &format!(
                "this napster answers to {} only, not to Host {host:?}; open the address \
                 the daemon printed (a proxy must pass its name as [web] reverse_proxy)",
                self.hosts[0]
            ),
        )))
    }

    /// An `Origin`, when the browser sends one, must be this server's.
    pub fn check_origin(&self, request: &Request) -> Result<(), Box<Response>> {
        match header_text(request, header::ORIGIN).map(str::to_lowercase) {
            None => Ok(()),
            Some(origin) if self.origins.contains(&origin) => Ok(()),
            Some(origin) => Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "bad_origin",
                &format!("requests from {origin} are refused; use the daemon's own page"),
            ))),
        }
    }

    /// The token, as `Authorization: Bearer TOKEN` or the page's cookie. A state change
    /// authorised by the cookie alone must also carry our `Origin` (browsers send it on
    /// every POST), so that a request a browser makes on another page's behalf is refused
    /// even if the cookie were sent.
    pub fn check_token(&self, request: &Request) -> Result<(), Box<Response>> {
        let bearer = header_text(request, header::AUTHORIZATION)
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(given) = bearer {
            return if self.token.matches(given) {
                Ok(())
            } else {
                Err(Box::new(unauthorized(
                    "the token given is not this daemon's",
                )))
            };
        }
        match cookie(request) {
            Some(given) if self.token.matches(&given) => {
                let changes = request.method() != http::Method::GET;
                if changes && header_text(request, header::ORIGIN).is_none() {
                    return Err(Box::new(error(
                        StatusCode::FORBIDDEN,
                        "bad_origin",
                        "a change made with the page's cookie must come from the page",
                    )));
                }
                Ok(())
            }
            Some(_) => Err(Box::new(unauthorized(
                "the page's token is out of date; open the address the daemon printed",
            ))),
            None => Err(Box::new(unauthorized(
                "send the token as `Authorization: Bearer TOKEN` (it is in the web-token \
                 file beside the peer's key), or open the address the daemon printed",
            ))),
        }
    }

    /// `/?token=TOKEN` (the printed address): keep the token in an HttpOnly,
    /// SameSite=Strict cookie and send the browser on to `/` without it in the address
    /// bar. `None` when the request carries no token in its query.
    pub fn login(&self, request: &Request) -> Option<Response> {
        let given = query_value(request, "token")?;
        if !self.token.matches(&given) {
            return Some(unauthorized(
                "the token in this address is not this daemon's; open the address it printed",
            ));
        }
        let mut response = http::answer(StatusCode::SEE_OTHER, "text/plain", "");
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, header::HeaderValue::from_static("/"));
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.token.secret()
        );
        if let Ok(value) = header::HeaderValue::from_str(&cookie) {
            headers.insert(header::SET_COOKIE, value);
        }
        Some(response)
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn header_text(request: &Request, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The token in the page's cookie, if any.
fn cookie(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

//! The API's routes (`docs/API.md`): each turns a request into the words of a shell
//! command, runs it on the daemon's shell ([`Commands`]) and answers with that command's
//! records, the ones `--json` prints (`docs/JSON.md`). Errors carry the CLI's stable
//! codes, each with an HTTP status ([`status_of`]).

use std::sync::Arc;

use http_body_util::BodyExt;
use serde::Deserialize;

use super::commands::Commands;
use super::events::Hub;
use crate::error::Error;
use crate::http::{self, Method, Request, Response, StatusCode, header};
use crate::shell::present::records::{self as output, Record};
use crate::web::{self, query_value, sse};

/// Largest request body the API reads (a download or share request is a few words).
pub const MAX_BODY: usize = 64 * 1024;

/// The header that carries how many rows a search or browse matched in all.
pub const TOTAL_HEADER: &str = "x-total-count";

/// What the routes work with.
pub struct Api {
    /// The daemon's shell.
    pub commands: Commands,
    /// Live events.
    pub hub: Arc<Hub>,
    /// What `/api/status` adds to the shell's `status`: the daemon's own facts.
    pub about: serde_json::Value,
}

/// `POST /api/downloads`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownloadRequest {
    file: Option<String>,
    peer: Option<String>,
    link: Option<String>,
}

/// `POST /api/shares`'s and `DELETE /api/shares`' body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareRequest {
    dir: String,
}

/// `PUT /api/limits`' body: rates as `limit` takes them (`2MiB/s`, `0`: none).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsRequest {
    upload: Option<String>,
    download: Option<String>,
}

/// The HTTP status of an error with the CLI's `code`.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "usage" | "config" => StatusCode::BAD_REQUEST,
        "not_found" => StatusCode::NOT_FOUND,
        "timeout" => StatusCode::GATEWAY_TIMEOUT,
        "io" | "protocol" | "wrong_key" | "checksum_mismatch" => StatusCode::BAD_GATEWAY,
        "cancelled" => StatusCode::CONFLICT,
        code if code.starts_with("refused_busy") => StatusCode::SERVICE_UNAVAILABLE,
        code if code.starts_with("refused_") => StatusCode::BAD_GATEWAY,
        // A command refused in this state (`pause` of an ended download, a second `get`
        // of the same file): the request conflicts with the queue as it is.
        _ => StatusCode::CONFLICT,
    }
}

/// The answer for a failed command.
pub fn failure(e: &Error) -> Response {
    let code = output::error_code(e);
    web::error(status_of(&code), &code, &e.to_string())
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    http::answer(status, "application/json", body)
}

fn usage(message: &str) -> Response {
    web::error(StatusCode::BAD_REQUEST, "usage", message)
}

/// Read a JSON body of at most [`MAX_BODY`] bytes as `T`.
async fn body<T: serde::de::DeserializeOwned>(request: Request) -> Result<T, Response> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_BODY);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(web::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "usage",
                &format!("the body must be JSON of at most {MAX_BODY} bytes"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        usage(&format!(
            "the body is not what this route takes: {e}; docs/API.md shows it"
        ))
    })
}

impl Api {
    /// Answer one request to `/api/…` (the guard has passed it).
    pub async fn route(&self, request: Request) -> Response {
        let path = request.uri().path().to_owned();
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
        let method = request.method().clone();
        match (&method, parts.as_slice()) {
            (&Method::GET, ["status"]) => self.status().await,
            (&Method::GET, ["search"]) => self.search(&request).await,
            (&Method::GET, ["peers"]) => self.rows(&["peers"], "peer").await,
            (&Method::GET, ["peers", peer, "files"]) => self.files(&request, peer).await,
            (&Method::GET, ["downloads"]) => self.rows(&["transfers"], "transfer").await,
            (&Method::POST, ["downloads"]) => self.download(request).await,
            (&Method::DELETE, ["downloads"]) | (&Method::POST, ["downloads", "clear"]) => {
                self.one(&["clear"], StatusCode::OK).await
            }
            (&Method::POST, ["downloads", id, action @ ("pause" | "resume" | "cancel")]) => {
                self.one(&[action, id], StatusCode::OK).await
            }
            (&Method::GET, ["uploads"]) => self.rows(&["uploads"], "upload").await,
            (&Method::POST, ["shares"]) => match body::<ShareRequest>(request).await {
                Ok(share) => self.one(&["share", &share.dir], StatusCode::OK).await,
                Err(answer) => answer,
            },
            (&Method::DELETE, ["shares"]) => match body::<ShareRequest>(request).await {
                Ok(share) => self.one(&["unshare", &share.dir], StatusCode::OK).await,
                Err(answer) => answer,
            },
            (&Method::GET, ["limits"]) => self.one(&["limit"], StatusCode::OK).await,
            (&Method::PUT, ["limits"]) => self.limits(request).await,
            (&Method::GET, ["events"]) => sse::stream(self.hub.subscribe()),
            (_, known) if known_route(known) => web::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "usage",
                &format!("{method} is not what {path} takes; docs/API.md lists the routes"),
            ),
            _ => web::error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route {path}; docs/API.md lists them"),
            ),
        }
    }

    /// The records of type `kind` from the command `words`, as a JSON array.
    async fn rows(&self, words: &[&str], kind: &str) -> Response {
        match self.commands.records(words).await {
            Ok(records) => json(StatusCode::OK, &of_type(records, kind)),
            Err(e) => failure(&e),
        }
    }

    /// The one record a command answers with (its first), or `{}`.
    async fn one(&self, words: &[&str], status: StatusCode) -> Response {
        match self.commands.records(words).await {
            Ok(records) => match records.into_iter().next() {
                Some(record) => json(status, &record),
                None => json(status, &serde_json::json!({})),
            },
            Err(e) => failure(&e),
        }
    }

    async fn search(&self, request: &Request) -> Response {
        let Some(q) = query_value(request, "q").filter(|q| !q.trim().is_empty()) else {
            return usage("give what to search for as ?q=PATTERN (the shell's search words)");
        };
        let Some(terms) = shlex::split(&q) else {
            return usage("unbalanced quotes in q");
        };
        let mut words = vec!["search".to_owned()];
        words.extend(paging(request));
        words.push("--".to_owned());
        words.extend(terms);
        self.paged(&words, "hit").await
    }

    async fn files(&self, request: &Request, peer: &str) -> Response {
        let mut words = vec!["files".to_owned()];
        words.extend(paging(request));
        words.push(peer.to_owned());
        self.paged(&words, "file").await
    }

    /// Rows of `kind` with the total in [`TOTAL_HEADER`].
    async fn paged(&self, words: &[String], kind: &str) -> Response {
        let records = match self.commands.records(words).await {
            Ok(records) => records,
            Err(e) => return failure(&e),
        };
        let total = records.iter().find_map(|r| match r {
            Record::Total { total, .. } => Some(*total),
            _ => None,
        });
        let rows = of_type(records, kind);
        let mut response = json(StatusCode::OK, &rows);
        let total = total.unwrap_or(rows.len() as u64);
        response
            .headers_mut()
            .insert(TOTAL_HEADER, header::HeaderValue::from(total));
        response
    }

    async fn download(&self, request: Request) -> Response {
        let wanted = match body::<DownloadRequest>(request).await {
            Ok(wanted) => wanted,
            Err(answer) => return answer,
        };
        let mut words = vec!["get".to_owned(), "-b".to_owned(), "--".to_owned()];
        match wanted {
            DownloadRequest {
                link: Some(link),
                file: None,
                peer: None,
            } => words.push(link),
            DownloadRequest {
                file: Some(file),
                peer,
                link: None,
            } => words.extend([file].into_iter().chain(peer)),
            _ => {
                return usage(
                    r#"give {"file": NAME}, {"file": NAME, "peer": PEER} or {"link": LINK}"#,
                );
            }
        }
        let started = match self.commands.records(&words).await {
            Ok(records) => records,
            Err(e) => return failure(&e),
        };
        let numbers: Vec<u64> = started
            .iter()
            .filter_map(|r| match r {
                Record::Started { transfer, .. } => Some(*transfer),
                _ => None,
            })
            .collect();
        let rows = match self.commands.records(&["transfers"]).await {
            Ok(rows) => rows,
            Err(e) => return failure(&e),
        };
        let rows: Vec<Record> = rows
            .into_iter()
            .filter(
                |r| matches!(r, Record::Transfer { transfer, .. } if numbers.contains(transfer)),
            )
            .collect();
        match rows.as_slice() {
            [one] => json(StatusCode::CREATED, one),
            _ => json(StatusCode::CREATED, &rows),
        }
    }

    async fn limits(&self, request: Request) -> Response {
        let wanted = match body::<LimitsRequest>(request).await {
            Ok(wanted) => wanted,
            Err(answer) => return answer,
        };
        for (direction, rate) in [("up", wanted.upload), ("down", wanted.download)] {
            if let Some(rate) = rate
                && let Err(e) = self.commands.run(&["limit", direction, &rate]).await
            {
                return failure(&e);
            }
        }
        self.one(&["limit"], StatusCode::OK).await
    }

    async fn status(&self) -> Response {
        let reply = match self.commands.run(&["status"]).await {
            Ok(reply) => reply,
            Err(e) => return failure(&e),
        };
        let limits = self.commands.records(&["limit"]).await.unwrap_or_default();
        let mut status = self.about.clone();
        status["status"] = reply.text.lines().map(str::to_owned).collect();
        status["limits"] = serde_json::to_value(limits.first()).unwrap_or_default();
        status["sharing"] = self.hub.sharing();
        json(StatusCode::OK, &status)
    }
}

/// `--offset N` and `-n N` from the query's `offset` and `limit`.
fn paging(request: &Request) -> Vec<String> {
    let mut words = Vec::new();
    if let Some(offset) = query_value(request, "offset") {
        words.extend(["--offset".to_owned(), offset]);
    }
    if let Some(limit) = query_value(request, "limit") {
        words.extend(["-n".to_owned(), limit]);
    }
    words
}

fn of_type(records: Vec<Record>, kind: &str) -> Vec<Record> {
    records
        .into_iter()
        .filter(|r| {
            serde_json::to_value(r)
                .ok()
                .and_then(|v| v["type"].as_str().map(|t| t == kind))
                .unwrap_or(false)
        })
        .collect()
}

fn known_route(parts: &[&str]) -> bool {
    matches!(
        parts,
        [
            "status"
                | "search"
                | "peers"
                | "downloads"
                | "uploads"
                | "shares"
                | "limits"
                | "events"
        ] | ["peers", _, "files"]
            | ["downloads", "clear"]
            | ["downloads", _, "pause" | "resume" | "cancel"]
    )
}

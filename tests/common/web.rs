//! `napster daemon` driven from tests: a folder with its `napster.toml`, the real binary
//! started on port 0, its printed address read back, and the API called with a real
//! HTTP client (`ureq`) or, where a client would tidy the request up (`..` in a path, a
//! forged `Host`), with the exact bytes over a socket.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::process::{Napster, Running};

/// How long one HTTP exchange with the daemon may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A folder for one daemon: `share/` with `files`, `napster.toml` naming `index`, a file
/// server on any port, and `extra` appended to the `[peer]` section.
pub fn daemon_dir(
    root: &Path,
    name: &str,
    index: SocketAddr,
    files: &[(&str, &[u8])],
    extra: &str,
) -> PathBuf {
    let dir = root.join(name);
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    for (file, contents) in files {
        std::fs::write(share.join(file), contents).unwrap();
    }
    std::fs::write(
        dir.join("napster.toml"),
        format!("[index]\nserver = \"{index}\"\n\n[peer]\ndir = \"share\"\nport = 0\n{extra}\n"),
    )
    .unwrap();
    dir
}

/// A running `napster daemon`.
pub struct Daemon {
    /// The process.
    pub process: Running,
    /// `http://127.0.0.1:PORT/`.
    pub base: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The token from its printed address.
    pub token: String,
    /// Its folder.
    pub dir: PathBuf,
    agent: ureq::Agent,
}

/// An answer: status, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Daemon {
    /// Start `napster daemon --listen 127.0.0.1:0 ARGS` in `dir` and read its address.
    pub fn start(napster: &Napster, dir: &Path, args: &[&str]) -> Daemon {
        let mut all = vec!["daemon", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut process = napster.start_with(dir, &all, "");
        process.end_input();
        let url = process.next_line();
        let (base, token) = url
            .split_once("?token=")
            .unwrap_or_else(|| panic!("no token in {url:?}"));
        let addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        Daemon {
            process,
            base: base.to_owned(),
            addr,
            token: token.to_owned(),
            dir: dir.to_owned(),
            agent,
        }
    }

    fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = response.expect("the daemon answers");
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET path` with the token.
    pub fn get(&self, path: &str) -> Answer {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        Self::answer(
            self.agent
                .get(&url)
                .header("Authorization", format!("Bearer {}", self.token))
                .call(),
        )
    }

    /// `METHOD path` with the token and a JSON body.
    pub fn send(&self, method: &str, path: &str, body: &Value) -> Answer {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        let auth = format!("Bearer {}", self.token);
        let response = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Authorization", auth)
                .send_json(body),
            "PUT" => self
                .agent
                .put(&url)
                .header("Authorization", auth)
                .send_json(body),
            "DELETE" => self
                .agent
                .delete(&url)
                .header("Authorization", auth)
                .force_send_body()
                .send_json(body),
            other => panic!("no method {other} here"),
        };
        Self::answer(response)
    }

    /// `POST path` with the token and a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, body)
    }

    /// Send `head` (request line and headers, `\r\n` each, without the blank line) as
    /// bytes, with `Connection: close`, and read the whole answer.
    pub fn raw(&self, head: &str) -> Answer {
        raw(self.addr, head)
    }

    /// The rows of `GET /api/downloads`.
    pub fn downloads(&self) -> Vec<Value> {
        let answer = self.get("/api/downloads");
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json().as_array().cloned().unwrap_or_default()
    }

    /// The row of download `number`.
    pub fn download(&self, number: u64) -> Value {
        self.downloads()
            .into_iter()
            .find(|r| r["transfer"] == number)
            .unwrap_or_else(|| panic!("no download {number}"))
    }
}

/// [`Daemon::raw`] on `addr`.
pub fn raw(addr: SocketAddr, head: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    write!(stream, "{head}\r\nConnection: close\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

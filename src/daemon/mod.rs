//! `napster daemon`: napster as a service. It shares `[peer] dir`, runs the download
//! queue and, with `--serve`, an index server, all without a prompt, in the foreground
//! until SIGTERM or SIGINT; and it serves the HTTP API and web page on `[web] listen`
//! (`docs/API.md`), printing the page's address, with its token, alone on a line.
//!
//! It drives the same shell the prompt does (one `Shell` on a thread of its own,
//! `commands.rs`), so the API's answers are the records of `--json`. An index that does
//! not answer yet is asked again, with a growing pause, until it does.

mod api;
mod commands;
mod events;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use smol::Async;
use smol::stream::StreamExt;
use tracing::{info, warn};

use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::http::{self, Request, Response, StatusCode, header};
use crate::runtime;
use crate::shell::Shell;
use crate::shell::present::records::exit;
use crate::shell::services::Services;
use crate::web::{self, Guard, Token, assets};
use commands::Commands;
use events::Hub;

/// First pause before asking an index that did not answer again.
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Longest pause between two attempts to register with an index that does not answer.
const RETRY_MOST: Duration = Duration::from_secs(30);

/// What the API admits. Its clients are local (a browser, scripts), all from loopback,
/// so the per-address bound is the whole; a page holds a few connections and one event
/// stream per tab.
const API_BOUNDS: http::Bounds = http::Bounds {
    connections: 256,
    connections_per_address: 256,
    max_head: 16 * 1024,
    head_timeout: Duration::from_secs(10),
};

pub use crate::shell::cli::DaemonArgs as Options;

/// Run the daemon until a signal; returns the exit status.
pub fn run(config: Config, options: Options) -> u8 {
    crate::net::raise_fd_limit();
    if let Err(e) = crate::logging::init(&config.log, None) {
        eprintln!("error: {e}");
        return exit::USAGE;
    }
    match smol::block_on(start(config, options)) {
        Ok(daemon) => {
            smol::block_on(daemon.wait());
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::Config(_) | Error::Usage(_) => exit::USAGE,
                _ => exit::FAILED,
            }
        }
    }
}

/// A running daemon.
struct Daemon {
    services: Arc<Services>,
    stop_web: runtime::ShutdownTrigger,
    web: smol::Task<()>,
}

/// The address to serve the API on, refused when it is not loopback and no TLS reverse
/// proxy is declared.
fn listen_addr(config: &Config, options: &Options) -> Result<SocketAddr> {
    let text = options
        .listen
        .clone()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| match config.web.listen.as_str() {
            "" => config::DAEMON_WEB_LISTEN.to_owned(),
            listen => listen.to_owned(),
        });
    let addr: SocketAddr = text.parse().map_err(|_| {
        Error::Config(format!(
            "`web.listen` {text:?} is not an address like {}",
            config::DAEMON_WEB_LISTEN
        ))
    })?;
    if !addr.ip().is_loopback() && config.web.reverse_proxy.is_empty() {
        return Err(Error::Config(format!(
            "`web.listen` {addr} is not a loopback address: the API would be open to the \
             network in plain HTTP. Serve it on 127.0.0.1 and put a TLS reverse proxy in \
             front (set `web.reverse_proxy` to the proxy's host name; README, \"Running \
             as a service\")"
        )));
    }
    Ok(addr)
}

async fn start(config: Config, options: Options) -> Result<Daemon> {
    let addr = listen_addr(&config, &options)?;
    let key_dir = config.peer.key.parent().unwrap_or(std::path::Path::new(""));
    let token = Token::load_or_create(key_dir)?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::msg(format!("cannot serve the web page on {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::msg(e.to_string()))?;
    let listener = Async::new(listener).map_err(|e| Error::msg(e.to_string()))?;
    if !addr.ip().is_loopback() {
        warn!(
            "the API listens on {addr}, beyond this machine, in plain HTTP: only a TLS \
             reverse proxy for {} may reach it",
            config.web.reverse_proxy
        );
    }
    let services = Arc::new(Services::default());
    let mut shell = Shell::new(config.clone(), services.clone(), false);
    if options.serve {
        let said = execute(&mut shell, "serve").await?;
        info!("{}", said.trim_end());
    }
    shell.resume_queue();
    let commands = Commands::start(shell).map_err(|e| Error::msg(e.to_string()))?;
    let hub = Arc::new(Hub::new(services.clone()));
    runtime::spawn(hub.clone().run(commands.clone())).detach();
    runtime::spawn(register(commands.clone())).detach();
    let base = format!("http://{addr}/");
    let api = Arc::new(api::Api {
        commands,
        hub,
        about: serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "web": base,
            "token_file": token.path.display().to_string(),
        }),
    });
    let guard = Arc::new(Guard::new(token.clone(), addr, &config.web.reverse_proxy));
    let (stop_web, shutdown) = runtime::shutdown_pair();
    let web = runtime::spawn(http::serve(
        listener,
        API_BOUNDS,
        shutdown,
        None,
        move |request| {
            let (api, guard) = (api.clone(), guard.clone());
            async move { answer(&api, &guard, request).await }
        },
    ));
    // The address alone on its line, for a person to open and a script to read.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{base}?token={}", token.secret());
    let _ = out.flush();
    Ok(Daemon {
        services,
        stop_web,
        web,
    })
}

/// Run one command line on the shell before it moves to its thread.
async fn execute(shell: &mut Shell, line: &str) -> Result<String> {
    let command =
        crate::shell::commands::parse(line)?.ok_or_else(|| Error::Usage("no command".into()))?;
    let outcome = shell
        .execute(command, crate::download::Cancel::default())
        .await?;
    Ok(crate::shell::present::render(
        &outcome,
        crate::shell::commands::Format::Table,
    ))
}

/// Share `[peer] dir` with the index, asking again (with a growing pause) while the
/// index does not answer.
async fn register(commands: Commands) {
    let mut pause = RETRY_FIRST;
    loop {
        match commands.run(&["register"]).await {
            Ok(reply) => {
                info!("{}", reply.text.trim_end());
                return;
            }
            Err(e) if e.to_string().contains("already sharing") => return,
            Err(e) => {
                warn!("cannot share yet ({e}); trying again in {pause:?}");
                smol::Timer::after(pause).await;
                pause = (pause * 2).min(RETRY_MOST);
            }
        }
    }
}

/// Every request: `Host` first, then the page's files (no token needed: they hold no
/// secret), the token login, and the API behind `Origin` and the token.
async fn answer(api: &api::Api, guard: &Guard, request: Request) -> Response {
    if let Err(refused) = guard.check_host(&request) {
        return *refused;
    }
    let path = request.uri().path();
    if !path.starts_with("/api/") {
        if request.method() != http::Method::GET {
            return web::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "usage",
                "the page's files are only read",
            );
        }
        if path == "/"
            && let Some(login) = guard.login(&request)
        {
            return login;
        }
        return match assets::find(path) {
            Some(asset) => {
                let mut response = http::answer(StatusCode::OK, asset.content_type, asset.body);
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    header::HeaderValue::from_static(
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    ),
                );
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    header::HeaderValue::from_static("nosniff"),
                );
                response
            }
            None => web::error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such page; the daemon serves only its own page at /",
            ),
        };
    }
    if let Err(refused) = guard.check_origin(&request) {
        return *refused;
    }
    if let Err(refused) = guard.check_token(&request) {
        return *refused;
    }
    api.route(request).await
}

impl Daemon {
    /// Serve until SIGTERM or SIGINT, then stop as the shell does: stop downloads
    /// (keeping what arrived), withdraw the share, stop the servers.
    async fn wait(self) {
        match Signals::new([Signal::Int, Signal::Term]) {
            Ok(mut signals) => {
                let _ = signals.next().await;
            }
            Err(e) => {
                eprintln!("error: cannot watch signals ({e}); stopping");
            }
        }
        eprintln!("napster: shutting down (withdrawing shared files)");
        self.stop_web.trigger();
        self.web.await;
        self.services.shutdown().await;
    }
}

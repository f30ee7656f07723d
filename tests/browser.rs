//! The web page in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (`chromedriver`, started on port 0) against real napster daemons. A new user's path
//! (open the printed address, search, one click to download, watch progress reach
//! 100 %, pause, resume, cancel), the attacks a local web page must resist, tried from
//! the browser itself, and screenshots of the page at phone and desktop widths in
//! `target/screenshots/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Killed, Napster};
use common::web::{Daemon, daemon_dir};
use common::{noise_words, start_index, wait_until};
use serde_json::{Value, json};

const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(60)),
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long the page may take to show something.
const PATIENCE: Duration = Duration::from_secs(60);

/// A phone's width and a wide desktop's, in CSS pixels.
const WIDTHS: [(&str, u32, u32); 2] = [("phone", 390, 844), ("desktop", 1920, 1080)];

/// A WebDriver session on a headless Chromium.
struct Browser {
    _driver: Killed,
    session: String,
    agent: ureq::Agent,
}

impl Browser {
    /// Chromium via chromedriver; a missing install fails with how to get one.
    /// `resolve` maps host names to 127.0.0.1 (for the DNS rebinding case).
    fn start(resolve: &str) -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's Chromium; install it with \
                 `apt-get install chromium chromium-driver` (.ci/run does) [{package}]"
            );
        }
        let mut child = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let stdout = child.stdout.take().unwrap();
        let driver = Killed(child);
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let port = lines
            .by_ref()
            .find_map(|line| {
                line.split("started successfully on port ")
                    .nth(1)
                    .map(str::to_owned)
            })
            .and_then(|p| p.trim_end_matches('.').parse::<u16>().ok())
            .expect("chromedriver printed its port");
        // Keep reading what it prints: a closed pipe would stop it.
        std::thread::spawn(move || lines.for_each(drop));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PATIENCE))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let mut args = vec![
            "--no-sandbox",
            "--headless",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1920,1080",
        ];
        let rules = format!("--host-resolver-rules={resolve}");
        if !resolve.is_empty() {
            args.push(&rules);
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let mut answer = agent
            .post(format!("{base}/session"))
            .send_json(&capabilities)
            .expect("chromedriver answers");
        let value: Value = answer.body_mut().read_json().unwrap();
        let session = value["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {value}"))
            .to_owned();
        Browser {
            _driver: driver,
            session: format!("{base}/session/{session}"),
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let answer = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut answer = answer.expect("chromedriver answers");
        let value: Value = answer.body_mut().read_json().unwrap();
        if let Some(error) = value["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                value["value"]["message"]
            );
        }
        value["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Run `script` in the page (`return …` gives its value).
    fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Run `script` in the page, which ends by calling `arguments[0](value)`.
    fn run_async(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Wait until `script` returns true in the page.
    fn wait_for(&self, what: &str, script: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.run(script) != json!(true) {
            if std::time::Instant::now() > deadline {
                let page = self.run("return document.querySelector('main').innerText");
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    page.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    fn screenshot(&self, path: &Path) {
        let png = self.call("GET", "/screenshot", None);
        let bytes = data_encoding::BASE64
            .decode(png.as_str().unwrap().as_bytes())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.session).call();
    }
}

/// The row of download `name` in the page's transfers table: `state` attribute.
fn state_of(name: &str) -> String {
    format!(
        "return [...document.querySelectorAll('#transfers tbody tr')]\
         .filter(r => r.querySelector('.name').textContent === {name:?})\
         .map(r => r.dataset.state)[0] || ''"
    )
}

/// Wait until the page's row of `name` is in `state`.
fn wait_state(browser: &Browser, what: &str, name: &str, state: &str) {
    let row = state_of(name);
    let script = format!(
        "return ({}) === {state:?}",
        row.trim_start_matches("return ")
    );
    browser.wait_for(what, &script);
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// At phone and desktop widths: nothing sticks out sideways (tables scroll inside their
/// own box), and a screenshot in `target/screenshots/`.
fn screenshots_at_both_widths(browser: &Browser) {
    for (name, width, height) in WIDTHS {
        browser.resize(width, height);
        // Nothing sticks out sideways (tables scroll inside their own box).
        let wider = browser.run(
            "return [...document.querySelectorAll('body *')]\
             .filter(e => !(e.parentElement && e.parentElement.closest('.scroll')) && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)\
             .map(e => e.tagName + '#' + e.id + '.' + e.className)",
        );
        assert_eq!(wider, json!([]), "at {width} px these stick out");
        browser.screenshot(&screenshots().join(format!("{name}.png")));
    }
}

#[test]
fn a_new_user_searches_downloads_and_controls_a_transfer_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let slow = noise_words(3, 3 << 20);
    let other = noise_words(4, 3 << 20);
    let files: [(&str, &[u8]); 3] = [
        ("slow song.bin", &slow),
        ("other.bin", &other),
        ("notes.txt", b"hello"),
    ];
    let sharer_dir = daemon_dir(
        tmp.path(),
        "sharer",
        index,
        &files,
        "upload_limit = \"512KiB/s\"",
    );
    let sharer = Daemon::start(&NAPSTER, &sharer_dir, &[]);
    wait_until("the sharer to share", PATIENCE, || {
        !sharer.get("/api/status").json()["sharing"].is_null()
    });
    let getter = Daemon::start(
        &NAPSTER,
        &daemon_dir(tmp.path(), "getter", index, &[], ""),
        &[],
    );

    let browser = Browser::start("");
    browser.open(&format!("{}?token={}", getter.base, getter.token));
    browser.wait_for(
        "the page to show the status",
        "return document.querySelector('#summary').textContent.includes('peer #')",
    );
    assert_eq!(
        browser.run("return location.search"),
        json!(""),
        "the token left the address bar"
    );
    assert_eq!(
        browser.run("return document.cookie"),
        json!(""),
        "the cookie is HttpOnly"
    );

    browser.type_into("#q", "bin");
    browser.click("#search-form button[type=submit]");
    browser.wait_for(
        "two results",
        "return document.querySelectorAll('#results tbody tr').length === 2",
    );
    browser.click("#results tbody tr:first-child button");
    let first = browser
        .run("return document.querySelector('#results tbody tr:first-child .name').textContent");
    let first = first.as_str().unwrap().to_owned();
    wait_state(&browser, "it to run", &first, "running");
    screenshots_at_both_widths(&browser);
    browser.click("#transfers tbody tr button[aria-label^=Pause]");
    wait_state(&browser, "it to pause", &first, "paused");
    browser.click("#transfers tbody tr button[aria-label^=Resume]");
    wait_state(&browser, "it to finish", &first, "done");
    let percent =
        browser.run("return document.querySelector('#transfers tbody tr .percent').textContent");
    assert_eq!(percent, json!("100 %"));

    // The other file: queued, then cancelled from the page.
    browser.click("#results tbody tr:nth-child(2) button");
    let second = browser
        .run("return document.querySelector('#results tbody tr:nth-child(2) .name').textContent");
    let second = second.as_str().unwrap().to_owned();
    wait_state(&browser, "the second to start", &second, "running");
    browser.click(&format!(
        "#transfers tbody tr button[aria-label='Cancel download 2 ({second})']"
    ));
    wait_state(&browser, "it to be cancelled", &second, "cancelled");
}

#[test]
fn a_hostile_page_in_the_same_browser_gets_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let daemon = Daemon::start(
        &NAPSTER,
        &daemon_dir(tmp.path(), "d", index, &[("a.txt", b"a")], ""),
        &[],
    );
    let queued = daemon.post("/api/downloads", &json!({ "file": "a.txt" }));
    assert_eq!(queued.status, 201, "{}", queued.body);
    wait_until("the download to end", PATIENCE, || {
        daemon.download(1)["state"] == "done"
    });
    let port = daemon.addr.port();
    let browser = Browser::start("MAP rebind.test 127.0.0.1");
    // Signed in: the browser holds the cookie.
    browser.open(&format!("{}?token={}", daemon.base, daemon.token));
    browser.wait_for(
        "the page",
        "return document.querySelector('#summary').textContent !== 'connecting…'",
    );

    // Cross-site: another origin's page posts to the API with the browser's cookies.
    browser.open("data:text/html,<title>elsewhere</title>");
    let result = browser.run_async(&format!(
        "const done = arguments[0];\
         fetch('http://127.0.0.1:{port}/api/downloads/clear', {{method: 'POST', mode: 'no-cors', credentials: 'include'}})\
         .then(() => fetch('http://127.0.0.1:{port}/api/downloads', {{credentials: 'include'}}))\
         .then(r => r.text()).then(t => done('read: ' + t), e => done('refused: ' + e))"
    ));
    let result = result.as_str().unwrap_or_default().to_owned();
    assert!(
        result.starts_with("refused"),
        "another page read the API: {result}"
    );
    assert_eq!(
        daemon.downloads().len(),
        1,
        "a cross-site POST cleared the queue"
    );

    // DNS rebinding: a name the attacker controls, resolving to 127.0.0.1.
    browser.open(&format!("http://rebind.test:{port}/"));
    let text = browser.run("return document.body.innerText");
    assert!(
        text.as_str().unwrap_or_default().contains("bad_host"),
        "{text}"
    );
    let read = browser.run_async(
        "const done = arguments[0];\
         fetch('/api/downloads').then(r => r.text()).then(done, e => done('failed: ' + e))",
    );
    assert!(
        !read.as_str().unwrap_or_default().contains("a.txt"),
        "{read}"
    );

    // Path traversal from the browser's address bar.
    browser.open(&format!("http://127.0.0.1:{port}/..%2fnapster.toml"));
    let text = browser.run("return document.body.innerText");
    assert!(
        text.as_str().unwrap_or_default().contains("not_found"),
        "{text}"
    );
}

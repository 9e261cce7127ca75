//! A real headless Chromium driven over the W3C WebDriver protocol: Debian's
//! `chromedriver` started on loopback, spoken to with plain HTTP/1.1 and JSON. Only the
//! few commands the browser tests use: open a page, find elements, read their text,
//! click, type, run a script, resize the window, prefer a colour scheme and take a
//! screenshot.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the driver and the browser end with it.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element of the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile.
    pub fn start() -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "the browser tests need Debian's chromium and chromium-driver ({program}); .ci/run installs them"
            );
        }
        let port = super::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        super::git::wait_for(Duration::from_secs(30), "chromedriver to listen", || {
            browser
                .request("GET", "/status", None)
                .is_some_and(|v| v["value"]["ready"] == true)
        });
        // The flags that keep Chromium from reaching out to a network this machine lacks.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let answer = browser
            .request(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})),
            )
            .expect("chromedriver answers");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; the answer's JSON, `None` when the driver did not answer.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .ok()?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut response = Vec::new();
        let mut buffer = [0u8; 64 * 1024];
        let (head_end, length) = loop {
            let n = stream.read(&mut buffer).ok()?;
            if n == 0 {
                return None;
            }
            response.extend_from_slice(&buffer[..n]);
            if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())?;
                break (end + 4, length);
            }
        };
        while response.len() < head_end + length {
            let n = stream.read(&mut buffer).ok()?;
            if n == 0 {
                return None;
            }
            response.extend_from_slice(&buffer[..n]);
        }
        serde_json::from_slice(&response[head_end..head_end + length]).ok()
    }

    /// A command of this session; `None` when WebDriver answers with an error (an element
    /// gone stale while the page changes, say) or not at all.
    fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> Option<Value> {
        let path = format!("/session/{}{path}", self.session);
        let answer = self.request(method, &path, body)?;
        if answer["value"].get("error").is_some() {
            return None;
        }
        Some(answer["value"].clone())
    }

    /// The texts of the elements matching a CSS selector, read in one step inside the
    /// page (so a page that changes meanwhile gives an old or a new answer, never an
    /// error); empty while the page cannot answer.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let script =
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText);";
        self.try_command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": [css]})),
        )
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|t| t.as_str().unwrap_or_default().to_owned())
        .collect()
    }

    /// A command of this session; panics with WebDriver's error if it fails.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer = self
            .request(method, &path, body)
            .unwrap_or_else(|| panic!("chromedriver did not answer {method} {path}"));
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})));
    }

    pub fn current_url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The elements matching a CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[ELEMENT].as_str())
        .map(|id| Element {
            browser: self,
            id: id.to_owned(),
        })
        .collect()
    }

    /// The first element matching a CSS selector; panics if there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css} in {}", self.current_url()))
    }

    /// The text of the first element matching `css`, empty if there is none.
    pub fn text_of(&self, css: &str) -> String {
        self.texts(css).into_iter().next().unwrap_or_default()
    }

    /// Runs `script` in the page; its return value.
    pub fn execute(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` in the page with `args`; its return value.
    pub fn execute_with(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script`, which calls its last argument when done (a callback), with `args`;
    /// what it passed.
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Resizes the window (its outer size).
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Makes pages see `prefers-color-scheme: dark` (or light), through the DevTools
    /// protocol chromedriver passes on.
    pub fn prefer_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": "Emulation.setEmulatedMedia", "params": {
                "features": [{"name": "prefers-color-scheme", "value": scheme}],
            }})),
        );
    }

    /// A PNG of the viewport, written to the test artifacts as `name.png`; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("a base64 screenshot"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// Where the browser tests leave their screenshots: `target/ui-screenshots/`.
pub fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp is in target/")
        .join("ui-screenshots")
}

impl Element<'_> {
    fn path(&self, what: &str) -> String {
        format!("/element/{}/{what}", self.id)
    }

    pub fn text(&self) -> String {
        self.browser
            .command("GET", &self.path("text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the element is shown (WebDriver's "is element displayed").
    pub fn is_displayed(&self) -> bool {
        self.browser
            .command("GET", &self.path("displayed"), None)
            .as_bool()
            .unwrap_or(false)
    }

    pub fn click(&self) {
        self.browser
            .command("POST", &self.path("click"), Some(json!({})));
    }

    pub fn type_text(&self, text: &str) {
        self.browser
            .command("POST", &self.path("value"), Some(json!({"text": text})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

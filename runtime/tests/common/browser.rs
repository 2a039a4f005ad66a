//! A real browser for tests of the job page: headless Chromium (Debian's `chromium`
//! package, or `$SLUICE_CHROMIUM`), driven over the Chrome DevTools Protocol on a
//! WebSocket. When no Chromium is installed the test is skipped, unless
//! `SLUICE_REQUIRE_BROWSER=1` (CI) makes that a failure.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SLUICE_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path_var).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
        .ok_or_else(|| "no chromium on PATH: `apt-get install chromium`".to_string())
}

pub struct Browser {
    child: Child,
    page: WebSocket<TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A headless Chromium with one blank page; `None` (after saying why) when there is none
    /// to start and a browser is not required.
    pub fn start(test: &str) -> Option<Browser> {
        let binary = match chromium() {
            Ok(binary) => binary,
            Err(why) => return super::skip(test, &why, "SLUICE_REQUIRE_BROWSER"),
        };
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&binary)
            .args([
                "--headless",
                // Tests run as root in containers, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-proxy-server",
                "--window-size=1440,960",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{test}: starting {}: {e}", binary.display()));
        // Chromium says where its protocol listens on stderr; the rest is drained so that
        // it never blocks on a full pipe.
        let (found, endpoint) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = found.send(line[at..].trim().to_string());
                }
            }
        });
        let browser_ws = endpoint
            .recv_timeout(CALL_TIMEOUT)
            .unwrap_or_else(|_| panic!("{test}: Chromium printed no DevTools endpoint"));
        // ws://127.0.0.1:PORT/devtools/browser/ID: the page's endpoint is listed over HTTP.
        let host = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
        let targets: Value = agent
            .get(&format!("http://{host}/json/list"))
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let page_ws = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("{test}: no page among {targets}"))
            .to_string();
        let stream = TcpStream::connect(&host).unwrap();
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        let (page, _) = tungstenite::client(page_ws.as_str(), stream).unwrap();
        Some(Browser {
            child,
            page,
            next_id: 1,
            _profile: profile,
        })
    }

    /// Calls `method` and returns its result; events in between are passed over.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.page
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer");
            let message = self.page.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            if answer["id"] != json!(id) {
                continue;
            }
            if let Some(error) = answer.get("error") {
                panic!("{method} {params}: {error}");
            }
            return answer["result"].clone();
        }
    }

    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url}));
        assert!(result.get("errorText").is_none(), "{url}: {result}");
    }

    /// The value of JavaScript `expression` in the page.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; `what` names it in the failure, which
    /// also shows `explain` evaluated then.
    pub fn wait_for(&mut self, what: &str, expression: &str, explain: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(&format!("Boolean({expression})")) != json!(true) {
            if Instant::now() >= deadline {
                let seen = self.eval(explain);
                panic!("timed out after {timeout:?} waiting for {what}; the page shows {seen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the middle of the element `selector` names, as a mouse does.
    pub fn click(&mut self, selector: &str) {
        let quoted = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            "(() => {{ const r = document.querySelector({quoted}).getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// A PNG of the page as it shows now, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

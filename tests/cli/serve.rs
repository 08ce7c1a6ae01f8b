//! `mimo serve`: the API on bad input, the queue limit, SAM alone, and the page in a real
//! browser (headless Chromium through WebDriver).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{CKPT, IMAGE, MODEL, TempDir, root};

/// A `mimo serve` process, killed on drop.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mimo"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start mimo serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("mimo serve printed no URL within 120 s");
        let addr = line
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        assert!(addr.contains(':'), "not a URL: {line:?}");
        Server { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], &[])
    }

    fn post(&self, path: &str, body: &[u8]) -> Reply {
        http(&self.addr, "POST", path, &[], body)
    }

    fn post_json(&self, path: &str, v: serde_json::Value) -> Reply {
        http(
            &self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            v.to_string().as_bytes(),
        )
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts an error status whose JSON message contains `needle`.
    fn fails(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let msg = self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(needle), "`{msg}` does not mention `{needle}`");
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for the API and WebDriver.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body: a failed write is fine.
    let _ = s.write_all(body);
    // Read until the body is complete (by Content-Length or the last chunk), or the end of
    // the stream: a peer may keep the connection open despite `Connection: close`.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
            let body = raw.len() - split - 4;
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| body >= n)
                || (head.contains("chunked") && raw.ends_with(b"0\r\n\r\n"))
            {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let (mut out, mut at) = (Vec::new(), 0);
        while let Some(end) = body[at..].windows(2).position(|w| w == b"\r\n") {
            let size_line = String::from_utf8_lossy(&body[at..at + end]).into_owned();
            let size =
                usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap_or(0);
            at += end + 2;
            if size == 0 || at + size > body.len() {
                break;
            }
            out.extend_from_slice(&body[at..at + size]);
            at += size + 2;
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

const DEMO: [&str; 4] = [
    "--config",
    "configs/mimo/mimo-tiny.ron",
    "--checkpoint",
    "assets/demo/mimo-tiny-phantom",
];

fn upload(server: &Server, bytes: &[u8]) -> serde_json::Value {
    let r = server.post("/api/images", bytes);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn serve_api_answers_and_rejects_bad_input_without_going_down() {
    let server = Server::start(&[&DEMO[..], &["--max-upload-mb", "1"]].concat());
    let info = server.get("/api/info").json();
    assert_eq!(info["mode"], "mimo");
    assert!(info["samples"].as_array().unwrap().len() >= 4);
    assert_eq!(info["random_parts"].as_array().unwrap().len(), 0);
    let page = server.get("/");
    assert!(page.text().contains("<canvas id=\"canvas\""));

    // Images: a bundled sample, a NIfTI volume, and bad uploads.
    let sample = server.get("/api/samples/phantom_ct");
    assert_eq!(sample.header("content-type"), Some("image/png"));
    let img = upload(&server, &sample.body);
    assert_eq!(
        (img["width"].as_u64(), img["slices"].as_u64()),
        (Some(128), Some(1))
    );
    let id = img["id"].as_str().unwrap().to_string();
    let nii = std::fs::read(root().join("mimo-data/fixtures/nifti/mni_t1.nii.gz")).unwrap();
    let vol = upload(&server, &nii);
    assert_eq!(vol["kind"], "nifti");
    let slices = vol["slices"].as_u64().unwrap();
    assert!(slices > 1);
    let vid = vol["id"].as_str().unwrap();
    let png = server.get(&format!("/api/images/{vid}/slices/{}", slices / 2));
    assert_eq!(png.status, 200);
    assert!(png.body.starts_with(b"\x89PNG"));
    server
        .get(&format!("/api/images/{vid}/slices/{slices}"))
        .fails(400, "does not exist");
    server.get("/api/samples/../../etc/passwd").fails(404, "no");
    server.get("/api/samples/nope").fails(404, "phantom_ct");
    server.post("/api/images", b"").fails(400, "empty");
    server
        .post("/api/images", b"just some text, not an image")
        .fails(415, "DICOM");
    let mut dicom = vec![0u8; 128];
    dicom.extend_from_slice(b"DICM");
    dicom.extend_from_slice(&[0xff; 64]);
    server.post("/api/images", &dicom).fails(400, "DICOM");
    let mut corrupt_png = sample.body.clone();
    corrupt_png.truncate(200);
    server
        .post("/api/images", &corrupt_png)
        .fails(400, "cannot decode");
    server
        .post("/api/images", &vec![7u8; 3 << 20])
        .fails(413, "--max-upload-mb");

    // Questions: bad ones, then a real one (JSON, then streamed).
    let ask = |v: serde_json::Value| server.post_json("/api/answer", v);
    ask(serde_json::json!({"image": id, "question": "  "})).fails(400, "empty");
    ask(serde_json::json!({"image": "ffff", "question": "q"})).fails(404, "upload it again");
    ask(serde_json::json!({"image": id, "question": "q", "points": [[500, 3]]}))
        .fails(400, "outside the 128x128 image");
    ask(serde_json::json!({"image": id, "question": "q", "boxes": [[50, 50, 10, 10]]}))
        .fails(400, "top-left");
    ask(serde_json::json!({"image": id, "question": "q", "max_new_tokens": 100000}))
        .fails(400, "max_new_tokens");
    ask(serde_json::json!({"image": id, "question": "q", "slice": 3})).fails(400, "slice 3");
    ask(serde_json::json!({"image": id, "question": "q", "colour": "red"}))
        .fails(400, "unknown field");
    server
        .post("/api/answer", b"{not json")
        .fails(400, "bad JSON");
    let question = "Cut out the liver, spleen, right kidney, left kidney and aorta from the image \
                    and display it.";
    let a = ask(serde_json::json!({"image": id, "question": question, "points": [[60, 70]]}));
    assert_eq!(a.status, 200, "{}", a.text());
    let a = a.json();
    assert!(!a["text"].as_str().unwrap().is_empty());
    let segments = a["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "the demo model grounds phrases: {a}");
    assert!(segments[0]["png"].as_str().unwrap().len() > 10);
    let streamed = http(
        &server.addr,
        "POST",
        "/api/answer",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "text/event-stream"),
        ],
        serde_json::json!({"image": id, "question": question, "points": [[60, 70]]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(streamed.status, 200);
    let text = streamed.text();
    assert!(text.contains("event: text"), "{text}");
    let last = text
        .split("\n\n")
        .find(|b| b.starts_with("event: answer"))
        .expect("an answer event");
    let data: serde_json::Value =
        serde_json::from_str(last.split_once("data: ").unwrap().1.trim()).unwrap();
    assert_eq!(data["text"], a["text"], "streamed and plain answers agree");

    // Segmenting with MIMO's SAM works too; the server is still up after all of the above.
    let seg = server.post_json(
        "/api/segment",
        serde_json::json!({"image": id, "points": [[60, 70, 1]], "multimask": true}),
    );
    assert_eq!(seg.status, 200, "{}", seg.text());
    assert_eq!(seg.json()["masks"].as_array().unwrap().len(), 3);
    server.get("/api/nothing").fails(404, "/api/info");
    assert_eq!(server.get("/api/info").status, 200);
}

#[test]
fn serve_sam_alone_matches_mimo_segment_and_caches_the_embedding() {
    let dir = TempDir::new("serve-sam");
    let json = dir.path("cli.json");
    let out = super::segment(&[
        "--image",
        IMAGE,
        "--point",
        "98,110",
        "--box",
        "30,30,170,200",
        "--multimask",
        "--out",
        &dir.path("m.png"),
        "--json",
        &json,
    ]);
    assert!(out.status.success(), "{}", super::stderr(&out));
    let cli: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    let server = Server::start(&["--sam", MODEL, "--checkpoint", CKPT]);
    assert_eq!(server.get("/api/info").json()["mode"], "sam");
    let img = upload(&server, &std::fs::read(root().join(IMAGE)).unwrap());
    let req = serde_json::json!({"image": img["id"], "points": [[98, 110, 1]],
                                 "box": [30, 30, 170, 200], "multimask": true});
    let first = server.post_json("/api/segment", req.clone()).json();
    assert_eq!(first["cached_embedding"], false);
    for (k, (a, b)) in first["masks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(cli["masks"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(a["rle"], b["rle"], "mask {k} differs from `mimo segment`");
        let d = (a["predicted_iou"].as_f64().unwrap() - b["predicted_iou"].as_f64().unwrap()).abs();
        assert!(d < 1e-5, "mask {k}: IoU differs by {d}");
    }
    assert_eq!(first["best"], cli["best"]);
    let again = server.post_json("/api/segment", req).json();
    assert_eq!(again["cached_embedding"], true);
    assert_eq!(again["masks"], first["masks"]);
    server
        .post_json("/api/segment", serde_json::json!({"image": img["id"]}))
        .fails(400, "at least one point or a box");
    server
        .post_json(
            "/api/answer",
            serde_json::json!({"image": img["id"], "question": "what?"}),
        )
        .fails(400, "SAM alone");
}

#[test]
fn serve_queue_limit_gives_503_with_retry_after() {
    let server = Server::start(&[&DEMO[..], &["--queue", "1"]].concat());
    let sample = server.get("/api/samples/phantom_xray");
    let id = upload(&server, &sample.body)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = server.addr.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (addr, id) = (addr.clone(), id.clone());
            std::thread::spawn(move || {
                let body = serde_json::json!({"image": id, "question": "What is shown?",
                                              "max_new_tokens": 48});
                http(
                    &addr,
                    "POST",
                    "/api/answer",
                    &[("Content-Type", "application/json")],
                    body.to_string().as_bytes(),
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "8 requests at once on a queue of 1: some must be refused"
    );
    for r in &replies {
        assert!(
            r.status == 200 || r.status == 503,
            "{} {}",
            r.status,
            r.text()
        );
    }
    for r in busy {
        assert_eq!(r.header("retry-after"), Some("2"));
        r.fails(503, "--queue");
    }
    assert!(replies.iter().any(|r| r.status == 200));
}

/// 200 questions from 8 clients at once: only documented 503s, latency percentiles and memory
/// before and after (run by hand: `cargo test --test cli serve_load -- --ignored --nocapture`).
#[test]
#[ignore]
fn serve_load_test() {
    let server = Server::start(&[&DEMO[..], &["--queue", "16"]].concat());
    let sample = server.get("/api/samples/phantom_ct");
    let id = upload(&server, &sample.body)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rss_before = server.rss_kib();
    let started = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let (addr, id) = (server.addr.clone(), id.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..25 {
                    let body = serde_json::json!({"image": id,
                        "question": "Cut out the liver and spleen from the image.",
                        "points": [[40 + c * 5, 50 + i]], "max_new_tokens": 64});
                    let t = Instant::now();
                    let r = http(
                        &addr,
                        "POST",
                        "/api/answer",
                        &[("Content-Type", "application/json")],
                        body.to_string().as_bytes(),
                    );
                    out.push((r.status, t.elapsed().as_secs_f64()));
                }
                out
            })
        })
        .collect();
    let mut all: Vec<(u16, f64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let rss_after = server.rss_kib();
    let bad: Vec<_> = all.iter().filter(|(s, _)| *s != 200 && *s != 503).collect();
    assert!(bad.is_empty(), "unexpected statuses: {bad:?}");
    all.sort_by(|a, b| a.1.total_cmp(&b.1));
    let ok: Vec<f64> = all.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    let pct = |p: f64| ok[((ok.len() - 1) as f64 * p).round() as usize];
    println!(
        "load: {} requests in {wall:.1} s, {} ok, {} busy (503); p50 {:.2} s, p95 {:.2} s; \
         RSS {} -> {} MiB",
        all.len(),
        ok.len(),
        all.len() - ok.len(),
        pct(0.5),
        pct(0.95),
        rss_before / 1024,
        rss_after / 1024
    );
}

/// WebDriver (chromedriver) on a free port, killed on drop.
struct Driver {
    child: Child,
    addr: String,
    session: String,
}

impl Driver {
    fn start() -> Option<Driver> {
        let exe = ["chromedriver", "/usr/bin/chromedriver"]
            .into_iter()
            .find(|e| Command::new(e).arg("--version").output().is_ok())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let addr = format!("127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < until, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut d = Driver {
            child,
            addr,
            session: String::new(),
        };
        let profile = std::env::temp_dir().join(format!("mimo-chromium-{}", std::process::id()));
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let r = d.call("POST", "/session", caps);
        d.session = r["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Some(d)
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let body = if method == "GET" {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = http(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            &body,
        );
        let v = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            serde_json::json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|e| e.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn script(&self, js: &str) -> serde_json::Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            serde_json::json!({"script": js, "args": []}),
        )
    }

    /// Waits until `js` (an expression) is truthy.
    fn wait(&self, js: &str, what: &str, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.script(&format!("return !!({js});"));
            if v == serde_json::json!(true) {
                return;
            }
            let err = self.script("return document.getElementById('error').textContent;");
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; page error: {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pointer actions on the canvas: `steps` are (x, y) offsets from its centre, in CSS px,
    /// pressed from the first to the last (viewport coordinates: ChromeDriver 148 rejects an
    /// element as a pointer's origin).
    fn drag(&self, steps: &[(i64, i64)]) {
        let rect = self.script(
            "const r = document.getElementById('canvas').getBoundingClientRect();
             return [Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2)];",
        );
        let (cx, cy) = (rect[0].as_i64().unwrap(), rect[1].as_i64().unwrap());
        let at = |(x, y): (i64, i64), duration: u64| {
            serde_json::json!({"type": "pointerMove", "duration": duration,
                               "origin": "viewport", "x": cx + x, "y": cy + y})
        };
        let mut actions = vec![at(steps[0], 0)];
        actions.push(serde_json::json!({"type": "pointerDown", "button": 0}));
        for &step in &steps[1..] {
            actions.push(at(step, 50));
        }
        actions.push(serde_json::json!({"type": "pointerUp", "button": 0}));
        self.call(
            "POST",
            &self.s("/actions"),
            serde_json::json!({"actions": [{"type": "pointer", "id": "mouse",
                "parameters": {"pointerType": "mouse"}, "actions": actions}]}),
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &self.s(""), &[], &[]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_page_in_a_real_browser() {
    let Some(driver) = Driver::start() else {
        assert!(
            std::env::var_os("MIMO_REQUIRE_BROWSER").is_none(),
            "chromedriver is missing but MIMO_REQUIRE_BROWSER is set"
        );
        eprintln!("skipped: no chromedriver (install Debian's chromium and chromium-driver)");
        return;
    };
    let server = Server::start(&DEMO);
    driver.call(
        "POST",
        &driver.s("/url"),
        serde_json::json!({"url": server.url()}),
    );
    driver.wait(
        "document.querySelector('[data-sample=phantom_ct]')",
        "the sample buttons",
        30,
    );
    let button = driver.find("[data-sample=phantom_ct]");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{button}/click")),
        serde_json::json!({}),
    );
    driver.wait(
        "document.getElementById('canvas').dataset.state === 'ready'",
        "the image",
        30,
    );
    // A click (a point) and a drag (a box).
    driver.drag(&[(-20, 10), (-20, 10)]);
    driver.drag(&[(10, -40), (40, -20), (60, 0)]);
    let prompts = driver.script("return [S.points.length, S.boxes.length];");
    assert_eq!(prompts, serde_json::json!([1, 1]), "one point and one box");
    let question = driver.script("return document.getElementById('question').value;");
    assert!(question.as_str().unwrap().contains("liver"), "{question}");
    let ask = driver.find("#ask");
    driver.call(
        "POST",
        &driver.s(&format!("/element/{ask}/click")),
        serde_json::json!({}),
    );
    driver.wait(
        "document.querySelectorAll('#answer mark').length > 0 && +document.getElementById('canvas').dataset.masks > 0",
        "the answer and its masks",
        120,
    );
    let answer = driver.script("return document.getElementById('answer').textContent;");
    assert!(!answer.as_str().unwrap().trim().is_empty());
    // The masks are drawn: the canvas is no longer the grey image alone.
    let coloured = driver.script(
        "const c = document.getElementById('canvas'); const d = c.getContext('2d')
           .getImageData(0, 0, c.width, c.height).data; let n = 0;
         for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i + 1]) > 40 || Math.abs(d[i + 1] - d[i + 2]) > 40) n++;
         return n;",
    );
    assert!(
        coloured.as_u64().unwrap() > 100,
        "coloured pixels: {coloured}"
    );
    let shot = driver.call("GET", &driver.s("/screenshot"), serde_json::json!({}));
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    let dest = root().join("target/test-artifacts/serve_page.png");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, png).unwrap();
    eprintln!("screenshot: {}", dest.display());
}

use super::*;
use crate::phantom::Style;
use crate::record::{PromptKind, read_jsonl};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// What the mock saw: (authorization header, request body).
type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Serves chat completions on 127.0.0.1: the first request gets HTTP 500, the second
/// 429 with `Retry-After: 0`, then every request is answered; a reply whose seed is
/// divisible by 3 forgets the markup (to be rejected). With `status` set, every request
/// gets that status instead.
fn mock(status: Option<u16>) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut len, mut auth) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if lower.starts_with("authorization:") {
                    auth = line[14..].trim().to_string();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            log.lock().unwrap().push((auth, req.clone()));
            let (code, extra, text) = match (status, n) {
                (Some(c), _) => (c, "", r#"{"error": {"message": "invalid key"}}"#.into()),
                (None, 0) => (500, "", "overloaded".to_string()),
                (None, 1) => (429, "Retry-After: 0\r\n", "slow down".to_string()),
                _ => (200, "", reply(&req)),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{extra}\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// A chat-completions response that answers the prompt like a careful model.
fn reply(req: &serde_json::Value) -> String {
    let user = req["messages"][1]["content"].as_str().unwrap();
    let names = user
        .split("in this order: ")
        .nth(1)
        .unwrap()
        .split(".\n")
        .next()
        .unwrap();
    let labels: Vec<&str> = names
        .split(", ")
        .map(|n| n.rsplit_once(" (").unwrap().0)
        .collect();
    let question = if user.contains("A point is placed") {
        "What is the structure at the marked point?"
    } else if user.contains("A bounding box") {
        "What lies within the bounding box?"
    } else {
        "Which structures can be recognised here, and why?"
    };
    let marked: Vec<String> = labels.iter().map(|l| format!("<p>{l}</p>")).collect();
    let answer = if req["seed"].as_u64().unwrap().is_multiple_of(3) {
        format!("It shows {}.", labels.join(" and "))
    } else {
        format!("It shows {}.", marked.join(" and "))
    };
    let content = serde_json::json!({"question": question, "answer": answer}).to_string();
    serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
        .to_string()
}

fn config(url: &str, key_env: &str) -> DatasetConfig {
    DatasetConfig {
        name: "t".into(),
        seed: 3,
        sources: vec![Source::Phantom {
            name: "ct".into(),
            style: Style::Ct,
            count: 6,
            size: 32,
            volumes: 3,
        }],
        perspectives: vec![Perspective::P1, Perspective::P3, Perspective::P4],
        splits: Splits::default(),
        box_jitter: 0.1,
        point_share: 0.5,
        point_mode: PointMode::Interior,
        knowledge: None,
        qa_endpoint: Some(QaEndpoint {
            base_url: url.into(),
            model: "mock-4o".into(),
            api_key_env: key_env.into(),
            temperature: 0.7,
            max_tokens: 600,
            json_mode: false,
            timeout_s: 10.0,
            max_retries: 3,
            initial_backoff_s: 0.01,
            max_backoff_s: 0.05,
            attempts: 3,
            concurrency: 3,
            cache: None,
            allow_names_in_question: false,
        }),
        workers: None,
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mimo-qa-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn endpoint_qa_retries_validates_caches_and_resumes() {
    let key_env = format!("MIMO_TEST_QA_KEY_{}", std::process::id());
    // SAFETY: a variable name only this test uses.
    unsafe { std::env::set_var(&key_env, "test-key") };
    let (url, seen) = mock(None);
    let out = tmp("run");
    let cfg = config(&url, &key_env);
    let mut stages = Vec::new();
    let s = build(&cfg, &out, &mut |st, d, t| stages.push((st, d, t))).unwrap();
    let q = s.qa.clone().unwrap();
    // 6 images: 6 P3 and 6 P4 jobs.
    assert_eq!(q.jobs, 12);
    assert_eq!(q.accepted + q.failed, 12);
    assert!(q.accepted >= 10, "{q:?}");
    assert_eq!(q.retries, 2, "the 500 and the 429 are retried: {q:?}");
    let rejected: usize = q.rejected.values().sum();
    assert!(rejected > 0 && q.rejected.keys().all(|k| k == "answer_entity_count"));
    assert_eq!(q.requests, 12 + rejected + 2, "{q:?}");
    assert_eq!(s.records["P3"] + s.records["P4"], q.accepted);
    assert_eq!(s.skipped.len(), q.failed);
    assert!(stages.contains(&(Stage::Questions, 12, 12)));
    // Every request carried the key, the model and the Appendix E.2 prompt parts.
    for (auth, req) in seen.lock().unwrap().iter() {
        assert_eq!(auth, "Bearer test-key");
        assert_eq!(req["model"], "mock-4o");
        let u = req["messages"][1]["content"].as_str().unwrap();
        assert!(
            u.contains("Knowledge:\n") && u.contains("Example:\n"),
            "{u}"
        );
    }
    let records = read_jsonl::<Record>(&out.join("records.jsonl")).unwrap();
    let mut p4_points = 0;
    for r in records.iter().filter(|r| r.perspective != Perspective::P1) {
        let labels: Vec<String> = r.masks.iter().map(|m| m.label.clone()).collect();
        crate::qa::validate_answer(r.answer().unwrap(), &labels).unwrap();
        if r.perspective == Perspective::P4 {
            assert_eq!(r.prompts.len(), 1);
            p4_points += usize::from(r.prompts[0].kind == PromptKind::Point);
            let word = if r.prompts[0].kind == PromptKind::Point {
                "point"
            } else {
                "box"
            };
            assert!(r.turns[0].value.contains(word), "{:?}", r.turns[0]);
        }
    }
    assert!(p4_points > 0 && p4_points < s.records["P4"]);
    let first = std::fs::read(out.join("records.jsonl")).unwrap();

    // Rerun with the endpoint gone: every reply comes from the cache, same records.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);
    let again = build(&config(&dead_url, &key_env), &out, &mut |_, _, _| {}).unwrap();
    let qa = again.qa.unwrap();
    assert_eq!((qa.requests, qa.cached), (0, 12 + rejected), "{qa:?}");
    assert_eq!(std::fs::read(out.join("records.jsonl")).unwrap(), first);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_refused_key_stops_the_build_with_the_servers_reason() {
    let (url, _) = mock(Some(401));
    let out = tmp("refused");
    let e = build(&config(&url, "MIMO_TEST_QA_UNSET"), &out, &mut |_, _, _| {}).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("HTTP 401") && m.contains("invalid key"), "{m}");
    assert!(!out.join("records.jsonl").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn endpoint_settings_are_checked_by_name() {
    let mut cfg = config("http://localhost:1/v1", "K");
    cfg.qa_endpoint.as_mut().unwrap().base_url = "localhost:8000".into();
    assert!(cfg.validate().unwrap_err().contains("qa_endpoint.base_url"));
    let mut cfg = config("http://localhost:1/v1", "K");
    cfg.qa_endpoint.as_mut().unwrap().attempts = 0;
    assert!(cfg.validate().unwrap_err().contains("qa_endpoint.attempts"));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/data/endpoint.ron");
    let cfg = DatasetConfig::load(&shipped).unwrap();
    assert_eq!(cfg.qa_endpoint.unwrap().model, "gpt-4o");
    let ron = r#"(name: "x", seed: 1, sources: [],
            qa_endpoint: Some((model: "gpt-4o", concurency: 2)))"#;
    let e = ron::from_str::<DatasetConfig>(ron).unwrap_err().to_string();
    assert!(e.contains("concurency"), "{e}");
}

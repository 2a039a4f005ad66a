//! Log lines on standard error: JSON objects (one per line, for log collectors) or text.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(true);

pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

fn line(level: &str, message: &str) {
    let time = crate::plan::timestamp(std::time::SystemTime::now());
    if JSON.load(Ordering::Relaxed) {
        eprintln!(
            "{}",
            serde_json::json!({"time": time, "level": level, "message": message})
        );
    } else {
        eprintln!("{time} {level:5} {message}");
    }
}

pub fn info(message: &str) {
    line("info", message);
}

pub fn warn(message: &str) {
    line("warn", message);
}

//! The sessions job against a direct computation of the same sessions: at parallelism 1 and
//! 2, with clicks in order and out of order, across a savepoint, and with the state TTL.

use serde_json::{json, Value};
use sluice_example_sessions::clicks::GeneratorConfig;
use sluice_example_sessions::sessions::{
    sessionize, SessionRules, OPEN_SESSION_SCHEMA, OPEN_SESSION_STATE, SESSIONIZE_UID,
};
use sluice_example_sessions::{register, Click, Session, JOB_NAME};
use sluice_runtime::api::{JobBuilder, Record, WatermarkStrategy};
use sluice_runtime::connectors::{CollectSink, JsonLinesSink, QueueSource};
use sluice_runtime::exec::{start_embedded, Clock, Restore, RunOptions};
use sluice_runtime::jobs::JobRegistry;
use sluice_runtime::snapshot::SnapshotContent;
use sluice_runtime::time::{EventTime, ProcTime};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const MAX_PARALLELISM: u32 = 128;

/// Sessions the plain way: each user's clicks sorted by time, cut wherever two consecutive
/// clicks are `gap_ms` or more apart.
fn expected_sessions(clicks: &[Click], gap_ms: i64) -> Vec<Session> {
    let mut by_user: BTreeMap<&str, Vec<(i64, u64)>> = BTreeMap::new();
    for c in clicks {
        by_user
            .entry(&c.user)
            .or_default()
            .push((c.ts.0, c.amount_cents));
    }
    let mut sessions = Vec::new();
    for (user, mut times) in by_user {
        times.sort_unstable();
        let mut run: Vec<(i64, u64)> = Vec::new();
        for click in times {
            if run.last().is_some_and(|last| click.0 - last.0 >= gap_ms) {
                sessions.push(session_of(user, &run));
                run.clear();
            }
            run.push(click);
        }
        sessions.push(session_of(user, &run));
    }
    sessions.sort();
    sessions
}

fn session_of(user: &str, run: &[(i64, u64)]) -> Session {
    let (start, end) = (run[0].0, run[run.len() - 1].0);
    Session {
        user: user.to_string(),
        start: EventTime(start),
        end: EventTime(end),
        clicks: run.len() as u64,
        amount_cents: run.iter().map(|c| c.1).sum(),
        #[cfg(feature = "v2")]
        duration_ms: end - start,
        #[cfg(feature = "v2-incompatible-state")]
        purchases: run.iter().filter(|c| c.1 > 0).count() as u64,
    }
}

fn registry() -> JobRegistry {
    let mut registry = JobRegistry::new();
    register(&mut registry);
    registry
}

fn write_clicks(path: &Path, clicks: &[Click]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for c in clicks {
        serde_json::to_writer(&mut file, c).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
}

fn committed_sessions(dir: &Path) -> Vec<Session> {
    let mut sessions: Vec<Session> = JsonLinesSink::committed_lines(dir)
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    sessions.sort();
    sessions
}

/// Runs the job as `sluice run` would, to the end of its input.
fn run_job(config: &Value, parallelism: usize) -> Vec<Session> {
    let graph = registry()
        .build(JOB_NAME, parallelism, MAX_PARALLELISM, config)
        .unwrap();
    start_embedded(graph, RunOptions::default())
        .unwrap()
        .wait()
        .unwrap();
    committed_sessions(Path::new(config["output"].as_str().unwrap()))
}

fn generator(clicks: u64, out_of_order_ms: u64) -> GeneratorConfig {
    GeneratorConfig {
        clicks,
        users: 300,
        clicks_per_second: 50,
        out_of_order_ms,
        ..GeneratorConfig::default()
    }
}

const GAP_MS: i64 = 10_000;

#[test]
fn sessions_equal_a_direct_computation_at_parallelism_1_and_2() {
    let dir = tempfile::tempdir().unwrap();
    let gen = generator(20_000, 0);
    let clicks: Vec<Click> = gen.all().collect();
    let expected = expected_sessions(&clicks, GAP_MS);
    assert!(
        expected.len() > 1_000 && expected.iter().any(|s| s.clicks > 3),
        "the input makes many sessions, some long: {}",
        expected.len()
    );
    let input = dir.path().join("clicks.jsonl");
    write_clicks(&input, &clicks);
    for parallelism in [1, 2] {
        let config = json!({
            "input": input,
            "sessionGapMs": GAP_MS,
            "output": dir.path().join(format!("file-p{parallelism}")),
        });
        let got = run_job(&config, parallelism);
        assert!(
            got == expected,
            "from the file at parallelism {parallelism}: {} sessions, {} expected",
            got.len(),
            expected.len()
        );
    }
    let config = json!({
        "generator": gen,
        "sessionGapMs": GAP_MS,
        "output": dir.path().join("generated"),
    });
    assert!(run_job(&config, 2) == expected, "from the generator");
}

#[test]
fn clicks_out_of_order_within_the_bound_give_the_same_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let bound = 3_000;
    let gen = generator(20_000, bound);
    let clicks: Vec<Click> = gen.all().collect();
    let disorder = clicks
        .windows(2)
        .filter(|pair| pair[1].ts < pair[0].ts)
        .count();
    assert!(
        disorder > 1_000,
        "clicks arrive out of order: {disorder} inversions"
    );
    let expected = expected_sessions(&clicks, GAP_MS);
    let input = dir.path().join("clicks.jsonl");
    write_clicks(&input, &clicks);
    for parallelism in [1, 2] {
        let config = json!({
            "input": input,
            "maxOutOfOrderMs": bound,
            "sessionGapMs": GAP_MS,
            "output": dir.path().join(format!("p{parallelism}")),
        });
        let got = run_job(&config, parallelism);
        assert!(
            got == expected,
            "at parallelism {parallelism}: {} sessions, {} expected",
            got.len(),
            expected.len()
        );
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stopped with a savepoint part-way and restored at another parallelism, the job commits
/// exactly the sessions of an uninterrupted run: none lost, none twice.
#[test]
fn a_savepoint_taken_mid_run_restores_to_exactly_the_same_sessions() {
    let dir = tempfile::tempdir().unwrap();
    // Many more clicks than the first run reads before its savepoint: the sources read far
    // ahead of the throttled sink (clicks wait in state for the watermark).
    let gen = generator(200_000, 1_000);
    let clicks: Vec<Click> = gen.all().collect();
    let expected = expected_sessions(&clicks, GAP_MS);
    let config = |output: &str, throttled: bool| {
        let mut config = json!({
            "generator": gen,
            "sessionGapMs": GAP_MS,
            "output": dir.path().join(output),
        });
        if throttled {
            // Slow enough that the savepoint comes before the end of the input.
            config["sink"] = json!({"maxRecordsPerSecond": 500});
        }
        config
    };
    let first = config("first", true);
    let graph = registry()
        .build(JOB_NAME, 2, MAX_PARALLELISM, &first)
        .unwrap();
    // Small buffers: the throttled sink holds back the sources instead of every session
    // waiting in a channel when the savepoint's barrier comes.
    let options = RunOptions {
        batch_size: 16,
        channel_capacity: 2,
        ..RunOptions::default()
    };
    let running = start_embedded(graph, options).unwrap();
    wait_until("the first sessions", Duration::from_secs(60), || {
        running
            .metrics()
            .iter()
            .map(|t| t.sink_records)
            .sum::<u64>()
            >= 500
    });
    let savepoints = format!("file://{}", dir.path().join("savepoints").display());
    let savepoint = running.savepoint(&savepoints, true).unwrap();
    running.wait().unwrap();
    let before = committed_sessions(&dir.path().join("first"));
    assert!(
        !before.is_empty() && before.len() < expected.len(),
        "the savepoint falls inside the run: {} of {} sessions before it",
        before.len(),
        expected.len()
    );

    // What the savepoint holds, as `sluice savepoint inspect` shows it.
    let content = SnapshotContent::read_verified(&savepoint.location).unwrap();
    let sessionize = content
        .operators
        .iter()
        .find(|op| op.uid == SESSIONIZE_UID)
        .expect("the sessionize operator's state");
    assert!(sessionize
        .states
        .iter()
        .any(|s| s.name == OPEN_SESSION_STATE && s.schema_version == OPEN_SESSION_SCHEMA));

    let then = config("then", false);
    let graph = registry()
        .build(JOB_NAME, 1, MAX_PARALLELISM, &then)
        .unwrap();
    let options = RunOptions {
        restore: Some(Restore::Snapshot(savepoint.location.clone())),
        ..RunOptions::default()
    };
    start_embedded(graph, options).unwrap().wait().unwrap();
    let mut all = before;
    all.extend(committed_sessions(&dir.path().join("then")));
    all.sort();
    assert!(
        all == expected,
        "{} sessions across the savepoint, {} expected",
        all.len(),
        expected.len()
    );
}

fn click(user: &str, ts: i64) -> Record<Click> {
    Record::new(
        EventTime(ts),
        Click {
            user: user.into(),
            ts: EventTime(ts),
            page: "/".into(),
            amount_cents: 0,
        },
    )
}

/// User `a` clicks once and goes quiet while event time stands still; user `b` keeps
/// clicking. With `idle_for` of processing time passing before event time moves on, `a`'s
/// session is emitted only if its state outlived the quiet spell.
fn sessions_after_a_quiet_spell(idle_for: Duration) -> Vec<Session> {
    let ttl = Duration::from_secs(10);
    let start = ProcTime(1_000_000);
    let clock = Clock::manual(start);
    let (source, input) = QueueSource::<Click>::new();
    let job = JobBuilder::new("ttl", 1, MAX_PARALLELISM);
    let (sink, out) = CollectSink::new();
    let rules = SessionRules {
        gap_ms: 60_000,
        state_ttl: ttl,
    };
    sessionize(
        &job.source("clicks", source, WatermarkStrategy::monotonous()),
        &rules,
    )
    .sink("out", sink);
    let options = RunOptions {
        clock: clock.clone(),
        ..RunOptions::default()
    };
    let running = start_embedded(job.build().unwrap(), options).unwrap();
    let mut sent = 0;
    let mut send = |record: Record<Click>| {
        input.send(record).unwrap();
        sent += 1;
        // Processed at the clock's current time, before the clock moves on.
        wait_until("the click to be processed", Duration::from_secs(10), || {
            running
                .metrics()
                .iter()
                .filter(|t| t.name.starts_with(SESSIONIZE_UID))
                .map(|t| t.records_in)
                .sum::<u64>()
                == sent
        });
    };
    send(click("a", 1_000));
    send(click("b", 1_000));
    // `b` stays active: each click rewrites its state, well within the TTL.
    let steps = 4;
    for i in 1..=steps {
        clock.advance_to(start.plus(idle_for * i / steps));
        send(click("b", 1_000 + i64::from(i) * 1_000));
    }
    // Event time moves on: every session of the quiet spell can close.
    send(click("c", 500_000));
    drop(input);
    running.wait().unwrap();
    let mut sessions: Vec<Session> = out
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.value.clone())
        .collect();
    sessions.sort();
    sessions
}

#[test]
fn state_ttl_drops_the_session_of_a_user_idle_longer_than_the_ttl() {
    let within = sessions_after_a_quiet_spell(Duration::from_secs(8));
    let users: Vec<&str> = within.iter().map(|s| s.user.as_str()).collect();
    assert_eq!(users, ["a", "b", "c"], "{within:?}");
    let b = &within[1];
    assert_eq!((b.start.0, b.end.0, b.clicks), (1_000, 5_000, 5));

    let beyond = sessions_after_a_quiet_spell(Duration::from_secs(20));
    assert_eq!(
        beyond.iter().map(|s| s.user.as_str()).collect::<Vec<_>>(),
        ["b", "c"],
        "{beyond:?}"
    );
    assert_eq!(beyond[0], within[1], "b's session does not change");
}

fn config_error(config: Value) -> String {
    match registry().build(JOB_NAME, 1, MAX_PARALLELISM, &config) {
        Ok(_) => panic!("{config} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    assert_eq!(
        config_error(json!({"sessionGapMs": 0})),
        "job config: spec.job.config.sessionGapMs: must be positive, got 0"
    );
    assert_eq!(
        config_error(json!({"input": "/no/such/clicks.jsonl"})),
        "job config: spec.job.config.input: /no/such/clicks.jsonl is not a readable file"
    );
    assert_eq!(
        config_error(json!({"generator": {"outOfOrderMs": 5_000}, "maxOutOfOrderMs": 1_000})),
        "job config: spec.job.config.generator.outOfOrderMs: 5000 exceeds maxOutOfOrderMs \
         (1000): clicks would arrive late"
    );
    let typo = config_error(json!({"sessionGap": 1_000}));
    assert!(
        typo.starts_with("job config: spec.job.config.sessionGap: unknown field `sessionGap`"),
        "{typo}"
    );
    let nested = config_error(json!({"generator": {"user": 10}}));
    assert!(
        nested.starts_with("job config: spec.job.config.generator.user: unknown field `user`"),
        "{nested}"
    );
}

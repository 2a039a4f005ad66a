//! Kafka on the cluster: a StreamJob reads its events from a broker on the node and writes
//! its results back to it, exactly once, while it is upgraded with a savepoint and rescaled
//! 2 -> 3 -> 1. What a read_committed consumer sees is compared with an uninterrupted
//! embedded run of the same job over the same events.
//!
//! A module of the operator tests rather than a test binary of its own: binaries run one
//! after another, tests of one binary side by side, and this one mostly waits.

use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use sluice_crds::{Phase, StreamJob};
use sluice_e2e::jobs::{patch, reference, settled, stream_job};
use sluice_e2e::kafka::NodeBroker;
use sluice_e2e::{e2e_test, wait_for, E2eError};
use sluice_runtime::connectors::kafka::{produce_nexmark, KafkaClientConfig};
use sluice_runtime::nexmark::NexmarkConfig;
use std::time::Duration;

/// q0 passes every bid through: each committed record is one event, so a lost or repeated
/// one shows.
const EVENTS: u64 = 300_000;
const PARTITIONS: u32 = 8;

/// The job's config: the events topic in, the results topic out, each sink subtask
/// throttled to `rate` records a second so that the job runs through the test's steps.
fn kafka_q0(broker: &NodeBroker, rate: u64) -> Value {
    json!({
        "generator": {"events": EVENTS},
        "input": format!("kafka://{}/events", broker.pod_bootstrap),
        "output": format!("kafka://{}/q0", broker.pod_bootstrap),
        "kafka": {"source": {"bounded": true}},
        "sink": {"maxRecordsPerSecond": rate},
    })
}

e2e_test!(
    a_kafka_job_upgraded_and_rescaled_on_the_cluster_commits_exactly_once,
    |ns| {
        let broker = NodeBroker::start(&ns.name)?;
        broker.create_topic("events", PARTITIONS)?;
        broker.create_topic("q0", 3)?;
        let client = KafkaClientConfig::new(broker.bootstrap.clone());
        let events = NexmarkConfig {
            events: EVENTS,
            ..NexmarkConfig::default()
        };
        produce_nexmark(&client, "events", &events, 0)
            .map_err(|e| E2eError::Config(format!("producing the events: {e}")))?;

        let api: Api<StreamJob> = ns.api();
        let (mut sj, dir) = stream_job(&ns, "q0-kafka", "nexmark-q0", json!({})).await?;
        sj.spec.job.config = kafka_q0(&broker, 1_000);
        api.create(&PostParams::default(), &sj).await?;
        settled(&api, "q0-kafka", Phase::Running).await?;
        let some_output = || async { Ok((!broker.read_committed("q0")?.is_empty()).then_some(())) };
        wait_for(
            "committed output in Kafka",
            Duration::from_secs(240),
            some_output,
        )
        .await?;

        // A config change needs new pods: stop with a savepoint, start from it.
        patch(
            &api,
            "q0-kafka",
            json!({"job": {"config": kafka_q0(&broker, 1_500)}}),
        )
        .await?;
        let upgraded = settled(&api, "q0-kafka", Phase::Running).await?;
        let status = upgraded.status.unwrap_or_default();
        let savepoint = status.last_savepoint.expect("the upgrade's savepoint");
        assert_eq!(
            status.target.and_then(|t| t.restore_from),
            savepoint.path,
            "the upgraded job restores the upgrade's savepoint"
        );

        for replicas in [3, 1] {
            let scale = json!({"spec": {"replicas": replicas}});
            api.patch_scale("q0-kafka", &PatchParams::default(), &Patch::Merge(&scale))
                .await?;
            let scaled = settled(&api, "q0-kafka", Phase::Running).await?;
            assert_eq!(
                scaled.status.unwrap_or_default().parallelism,
                Some(replicas)
            );
        }
        let mid_way = broker.read_committed("q0")?.len();

        let expected = reference(
            "nexmark-q0",
            &json!({"generator": {"events": EVENTS}}),
            &dir,
        );
        assert!(
            mid_way < expected.len(),
            "the job ended before it was rescaled: use more events or a slower sink"
        );
        let mut output = wait_for("all output in Kafka", Duration::from_secs(600), || async {
            let lines = broker.read_committed("q0")?;
            Ok((lines.len() >= expected.len()).then_some(lines))
        })
        .await?;
        output.sort();
        assert!(
            output == expected,
            "committed output differs from the reference: {} records, {} expected",
            output.len(),
            expected.len()
        );
        sluice_e2e::jobs::remove(&dir);
        Ok(())
    }
);

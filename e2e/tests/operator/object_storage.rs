//! Object storage on the cluster: a StreamJob keeps its checkpoints and savepoints in S3 (a
//! server on the node), writes its results there as Parquet parts partitioned by event-time
//! hour, and is upgraded with a savepoint while it runs. Its snapshots are encrypted with a
//! key from the same Secret. The committed parts hold exactly the records of an
//! uninterrupted embedded run; none is left hidden or partial.
//!
//! A module of the operator tests (see kafka.rs for why).

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Value};
use sluice_crds::{Phase, SecretKeySelector, SecretReference, SnapshotEncryption, StreamJob};
use sluice_e2e::jobs::{patch, reference, settled, stream_job};
use sluice_e2e::s3::{NodeS3, BUCKET};
use sluice_e2e::{e2e_test, wait_for, E2eError};
use sluice_runtime::connectors::{ObjectFileSink, PENDING};
use sluice_runtime::nexmark::Bid;
use std::time::Duration;

/// q0 passes every bid through, so a lost or repeated record shows.
const EVENTS: u64 = 200_000;
const SECRET: &str = "sluice-object-storage";
/// The Secret's key holding the snapshot key, and the key (base64 of 32 bytes).
const SNAPSHOT_KEY: &str = "snapshot-key";
const SNAPSHOT_KEY_VALUE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The job's config: bids spread over two hours of event time, throttled to `rate` records
/// a second per sink subtask so that the job runs through the test's steps.
fn q0_to_s3(rate: u64) -> Value {
    json!({
        "generator": {"events": EVENTS, "eventsPerSecond": EVENTS / 7200},
        "output": format!("s3://{BUCKET}/q0/output"),
        "sink": {
            "maxRecordsPerSecond": rate,
            "files": {"format": "parquet", "partitionBy": "hour"},
        },
    })
}

/// The records of the committed parts, as JSON lines; an error names a part that is not
/// whole.
async fn committed(s3: &NodeS3) -> sluice_e2e::Result<Vec<String>> {
    let mut lines = Vec::new();
    let pending = format!("q0/output/{PENDING}/");
    // Pending parts are not read at all: the sink deletes each once its checkpoint commits,
    // which can fall between the listing and the read.
    let parts = s3.objects_where("q0/output", |key| !key.starts_with(&pending));
    for (key, bytes) in parts.await? {
        let bids: Vec<Bid> = ObjectFileSink::read_part(&key, &bytes)
            .map_err(|e| E2eError::Config(format!("a committed part: {e}")))?;
        for bid in bids {
            lines.push(serde_json::to_string(&bid).map_err(|e| E2eError::Config(e.to_string()))?);
        }
    }
    lines.sort();
    Ok(lines)
}

e2e_test!(
    a_job_writing_parquet_to_object_storage_is_upgraded_on_the_cluster_and_commits_exactly_once,
    |ns| {
        let s3 = NodeS3::start(&ns.name).await?;
        let mut data = s3.pod_env();
        data.insert(SNAPSHOT_KEY.into(), SNAPSHOT_KEY_VALUE.into());
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": SECRET},
            "stringData": data,
        }))
        .map_err(|e| E2eError::Config(e.to_string()))?;
        ns.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await?;

        let api: Api<StreamJob> = ns.api();
        let (mut sj, dir) = stream_job(&ns, "q0-s3", "nexmark-q0", json!({})).await?;
        sj.spec.job.config = q0_to_s3(1_000);
        // Nothing on the node's disk: state and output in S3, reached with the Secret.
        sj.spec.checkpointing.storage = Some(format!("s3://{BUCKET}/q0/checkpoints"));
        sj.spec.pod_template = None;
        sj.spec.secrets.env = vec![SecretReference {
            name: SECRET.into(),
        }];
        sj.spec.checkpointing.encryption = Some(SnapshotEncryption {
            key_id: "e2e-1".into(),
            secret: SecretKeySelector {
                name: SECRET.into(),
                key: SNAPSHOT_KEY.into(),
            },
        });
        api.create(&PostParams::default(), &sj).await?;
        settled(&api, "q0-s3", Phase::Running).await?;
        wait_for(
            "committed parts in S3",
            Duration::from_secs(240),
            || async { Ok((!committed(&s3).await?.is_empty()).then_some(())) },
        )
        .await?;

        // A config change needs new pods: stop with a savepoint (in S3), start from it.
        patch(&api, "q0-s3", json!({"job": {"config": q0_to_s3(1_500)}})).await?;
        let upgraded = settled(&api, "q0-s3", Phase::Running).await?;
        let status = upgraded.status.unwrap_or_default();
        let savepoint = status.last_savepoint.and_then(|s| s.path);
        assert!(
            savepoint
                .as_deref()
                .is_some_and(|p| p.starts_with(&format!("s3://{BUCKET}/q0/checkpoints"))),
            "the upgrade's savepoint is in S3: {savepoint:?}"
        );
        let mid_way = committed(&s3).await?.len();
        // Running at all shows the key reached the pods: a coordinator whose manifest names a
        // key it lacks refuses to start. (q0 keeps no state, so its snapshots hold no state file
        // to check; encryption itself is tested with state in runtime/tests/recovery.rs.)

        let expected = reference(
            "nexmark-q0",
            &json!({"generator": {"events": EVENTS, "eventsPerSecond": EVENTS / 7200}}),
            &dir,
        );
        assert!(
            mid_way < expected.len(),
            "the job ended before it was upgraded: use more events or a slower sink"
        );
        let output = wait_for("all output in S3", Duration::from_secs(600), || async {
            let lines = committed(&s3).await?;
            Ok((lines.len() >= expected.len()).then_some(lines))
        })
        .await?;
        assert!(
            output == expected,
            "committed output differs from the reference: {} records, {} expected",
            output.len(),
            expected.len()
        );
        let parts = s3.objects("q0/output").await?;
        assert!(
            parts.keys().all(|k| k.starts_with("q0/output/date=")),
            "parts outside date=…/hour=… directories: {:?}",
            parts.keys().collect::<Vec<_>>()
        );
        sluice_e2e::jobs::remove(&dir);
        Ok(())
    }
);

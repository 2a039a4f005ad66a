//! The children of sample revisions, field by field.

use super::*;
use sluice_crds::command::{
    ArgDuration, Command, ControlArgs, CoordinatorArgs, OnTerminate, RestartArgs, RestoreFrom,
    SavepointCheckArgs, SavepointCommand, SavepointDeleteArgs, SnapshotArgs, WorkerArgs,
};
use sluice_crds::parse_manifest;

fn revision(yaml: &str) -> SpecRevision {
    let m = parse_manifest(yaml, "test.yaml").unwrap();
    let mut r = SpecRevision::new(m.spec, Some(1));
    r.run = Some("r1".into());
    r
}

fn job() -> JobRef {
    JobRef {
        namespace: "ns".into(),
        name: "q5".into(),
        uid: "u-1".into(),
    }
}

const BASE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: StreamJob
metadata: {name: q5}
spec:
  image: sluice:1
  job: {name: nexmark-q5, config: {output: /data/out}}
  parallelism: 5
  slotsPerWorker: 2
  checkpointing: {storage: "file:///data/ck/", interval: 2s}
  redactKeys: true
"#;

#[test]
fn a_revision_becomes_a_coordinator_and_enough_workers_for_its_slots() {
    let mut r = revision(BASE);
    r.restore_from = Some("file:///data/sp-1".into());
    let c = children(&job(), &r).unwrap();
    let workers = c.workers.spec.unwrap();
    assert_eq!(workers.replicas, Some(3));
    let pod = c.coordinator.spec.unwrap().template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    for expected in [
        "--parallelism=5",
        "--checkpoint-dir=file:///data/ck/ns/q5/r1",
        "--checkpoint-interval=2000ms",
        "--restore=latest",
        "--initial-snapshot=file:///data/sp-1",
        "--savepoint-dir=file:///data/ck/savepoints/ns/q5",
        "--on-terminate=cancel",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    assert_eq!(pod.containers[0].image.as_deref(), Some("sluice:1"));
    let manifest = &c.manifest.data.unwrap()["job.yaml"];
    let back = parse_manifest(manifest, "cm").unwrap();
    assert_eq!(back.spec, r.spec);
    // The coordinator reads it there and tells its workers.
    assert!(back.spec.redact_keys);
}

fn container_args(pod: Option<k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
    pod.unwrap().containers[0].args.clone().unwrap()
}

fn parsed(args: &[String]) -> Command {
    Command::try_parse_args(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn every_childs_command_line_parses_into_the_arguments_it_was_built_from() {
    let mut r = revision(BASE);
    r.restore_from = Some("file:///data/sp-1".into());
    let c = children(&job(), &r).unwrap();
    let coordinator = container_args(c.coordinator.spec.unwrap().template.spec);
    // Word for word what earlier operators wrote: a changed command line would roll the
    // pods of every running job when the operator is upgraded.
    assert_eq!(
        coordinator,
        [
            "coordinator",
            "/etc/sluice/job.yaml",
            "--listen=0.0.0.0:6123",
            "--control-addr=0.0.0.0:8081",
            "--on-terminate=cancel",
            "--wait-for-termination",
            "--parallelism=5",
            "--state-dir=/var/lib/sluice/state",
            "--checkpoint-dir=file:///data/ck/ns/q5/r1",
            "--checkpoint-interval=2000ms",
            "--retain-checkpoints=3",
            "--restore=latest",
            "--initial-snapshot=file:///data/sp-1",
            "--savepoint-dir=file:///data/ck/savepoints/ns/q5",
            "--restart-initial-backoff=10000ms",
            "--restart-max-backoff=300000ms",
            "--restart-backoff-multiplier=2",
            "--restart-backoff-jitter=0.2",
            "--restart-max-attempts=4294967295",
            "--restart-reset-after=600000ms",
            // Added with the metrics port: jobs started by an older operator restart once,
            // from their latest checkpoint, when the operator is upgraded.
            "--metrics-addr=0.0.0.0:9249",
            // Added with mutual TLS between a job's processes: likewise.
            "--tls-dir=/etc/sluice-tls",
        ]
    );
    assert_eq!(
        parsed(&coordinator),
        Command::Coordinator(CoordinatorArgs {
            manifest: "/etc/sluice/job.yaml".into(),
            parallelism: Some(5),
            listen: Some("0.0.0.0:6123".into()),
            on_terminate: Some(OnTerminate::Cancel),
            wait_for_termination: true,
            tls_dir: Some("/etc/sluice-tls".into()),
            restart: RestartArgs {
                restart_initial_backoff: Some(ArgDuration::from_millis(10_000)),
                restart_max_backoff: Some(ArgDuration::from_millis(300_000)),
                restart_backoff_multiplier: Some(2.0),
                restart_backoff_jitter: Some(0.2),
                restart_max_attempts: Some(u32::MAX),
                restart_reset_after: Some(ArgDuration::from_millis(600_000)),
            },
            snapshots: SnapshotArgs {
                checkpoint_interval: Some(ArgDuration::from_millis(2_000)),
                checkpoint_dir: Some("file:///data/ck/ns/q5/r1".into()),
                retain_checkpoints: Some(3),
                restore: Some(RestoreFrom::Latest),
                initial_snapshot: Some("file:///data/sp-1".into()),
                savepoint_dir: Some("file:///data/ck/savepoints/ns/q5".into()),
                state_dir: Some("/var/lib/sluice/state".into()),
                ..SnapshotArgs::default()
            },
            control: ControlArgs {
                control_addr: Some("0.0.0.0:8081".into()),
                control_token_file: None,
                metrics_addr: Some("0.0.0.0:9249".into()),
            },
            ..CoordinatorArgs::default()
        })
    );
    let worker = container_args(c.workers.spec.unwrap().template.spec);
    assert_eq!(
        worker,
        [
            "worker",
            "--coordinator=q5-coordinator:6123",
            "--slots=2",
            "--data-addr=0.0.0.0:6124",
            "--state-dir=/var/lib/sluice/state",
            "--connect-timeout=300s",
            "--tls-dir=/etc/sluice-tls",
        ]
    );
    assert_eq!(
        parsed(&worker),
        Command::Worker(WorkerArgs {
            coordinator: Some("q5-coordinator:6123".into()),
            slots: Some(2),
            data_addr: Some("0.0.0.0:6124".into()),
            state_dir: Some("/var/lib/sluice/state".into()),
            connect_timeout: Some(ArgDuration::from_secs(300)),
            tls_dir: Some("/etc/sluice-tls".into()),
            ..WorkerArgs::default()
        })
    );

    let stateless = BASE.replace(
        "  checkpointing: {storage: \"file:///data/ck/\", interval: 2s}\n",
        "  upgradeMode: stateless\n  allowNonRestoredState: true\n",
    );
    let mut r = revision(&stateless);
    r.restore_from = Some("file:///data/sp-2".into());
    let c = children(&job(), &r).unwrap();
    let Command::Coordinator(args) =
        parsed(&container_args(c.coordinator.spec.unwrap().template.spec))
    else {
        panic!("not a coordinator")
    };
    assert_eq!(
        args.snapshots,
        SnapshotArgs {
            restore: Some(RestoreFrom::Snapshot("file:///data/sp-2".into())),
            allow_non_restored_state: true,
            state_dir: Some("/var/lib/sluice/state".into()),
            ..SnapshotArgs::default()
        }
    );

    let (_, check) = preflight(&job(), &r, "file:///data/sp-2").unwrap();
    assert_eq!(
        parsed(&container_args(check.spec.unwrap().template.spec)),
        Command::Savepoint {
            command: SavepointCommand::Check(SavepointCheckArgs {
                snapshot: "file:///data/sp-2".into(),
                job: "nexmark-q5".into(),
                manifest: Some("/etc/sluice/job.yaml".into()),
                allow_non_restored_state: true,
            }),
        }
    );
    let doomed = ["file:///data/sp/a/sp-1".to_string(), "s3://b/sp-2".into()];
    let cleanup = savepoint_cleanup(&job(), &r.spec, &doomed).unwrap();
    assert_eq!(
        parsed(&container_args(cleanup.spec.unwrap().template.spec)),
        Command::Savepoint {
            command: SavepointCommand::Delete(SavepointDeleteArgs {
                savepoints: doomed.to_vec(),
            }),
        }
    );
}

#[test]
fn pod_template_overrides_merge_by_name_and_name_their_field_when_bad() {
    let with_volume = format!(
        "{BASE}  podTemplate:\n    spec:\n      volumes: [{{name: data, hostPath: {{path: /srv}}}}]\n      containers: [{{name: sluice, volumeMounts: [{{name: data, mountPath: /data}}]}}]\n"
    );
    let c = children(&job(), &revision(&with_volume)).unwrap();
    let pod = c.workers.spec.unwrap().template.spec.unwrap();
    let volumes: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(volumes, ["state", "tls", "tmp", "data"]);
    let mounts: Vec<_> = pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert_eq!(
        mounts,
        ["/var/lib/sluice/state", "/etc/sluice-tls", "/tmp", "/data"]
    );

    let bad = format!("{BASE}  worker:\n    podTemplate:\n      spec: {{containers: 3}}\n");
    let err = children(&job(), &revision(&bad)).err().unwrap().to_string();
    assert!(err.contains("spec.worker.podTemplate"), "{err}");
}

#[test]
fn the_savepoint_cleanup_runs_the_jobs_image_with_its_volumes_and_names_its_savepoints() {
    let with_volume = format!(
        "{BASE}  podTemplate:\n    spec:\n      volumes: [{{name: data, hostPath: {{path: /srv}}}}]\n      containers: [{{name: sluice, volumeMounts: [{{name: data, mountPath: /data}}]}}]\n"
    );
    let spec = revision(&with_volume).spec;
    let doomed = ["file:///data/sp/a/sp-0000000001".to_string()];
    let cleanup = savepoint_cleanup(&job(), &spec, &doomed).unwrap();
    let listed = &cleanup.metadata.annotations.as_ref().unwrap()[CLEANUP_SAVEPOINTS];
    assert_eq!(serde_json::from_str::<Vec<String>>(listed).unwrap(), doomed);
    let pod = cleanup.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("sluice:1"));
    assert_eq!(
        container.args.clone().unwrap(),
        ["savepoint", "delete", "file:///data/sp/a/sp-0000000001"]
    );
    let mounts = container.volume_mounts.clone().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/data"), "{mounts:?}");
}

#[test]
fn without_storage_a_job_has_no_checkpoints_and_starts_from_its_savepoint_only() {
    let yaml = BASE.replace(
        "  checkpointing: {storage: \"file:///data/ck/\", interval: 2s}\n",
        "  upgradeMode: stateless\n",
    );
    let c = children(&job(), &revision(&yaml)).unwrap();
    let args = c
        .coordinator
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        !args.iter().any(|a| a.starts_with("--checkpoint-dir")),
        "{args:?}"
    );
}

#[test]
fn pods_get_the_priority_class_of_the_jobs_priority_unless_their_template_names_one() {
    let c = children(&job(), &revision(BASE))
        .unwrap()
        .with_priority_class("sluice-high");
    let class = |t: Option<k8s_openapi::api::core::v1::PodSpec>| t.unwrap().priority_class_name;
    assert_eq!(
        class(c.coordinator.spec.unwrap().template.spec),
        Some("sluice-high".into())
    );
    assert_eq!(
        class(c.workers.spec.unwrap().template.spec),
        Some("sluice-high".into())
    );

    let own = format!(
        "{BASE}\n  worker:\n    podTemplate:\n      spec:\n        priorityClassName: batch\n"
    );
    let c = children(&job(), &revision(&own))
        .unwrap()
        .with_priority_class("sluice-high");
    assert_eq!(
        class(c.workers.spec.unwrap().template.spec),
        Some("batch".into())
    );
    assert_eq!(
        class(c.coordinator.spec.unwrap().template.spec),
        Some("sluice-high".into())
    );
}

#[test]
fn every_pod_gets_the_snapshot_key_from_its_secret_and_no_api_token() {
    let yaml = BASE.replace(
        "interval: 2s}\n",
        "interval: 2s, encryption: {keyId: k1, secret: {name: snap, key: aes}}}\n",
    );
    let r = revision(&yaml);
    let c = children(&job(), &r).unwrap();
    let doomed = ["file:///data/sp/a/sp-0000000001".to_string()];
    let cleanup = savepoint_cleanup(&job(), &r.spec, &doomed).unwrap();
    let pods = [
        ("coordinator", c.coordinator.spec.unwrap().template.spec),
        ("worker", c.workers.spec.unwrap().template.spec),
        ("cleanup", cleanup.spec.unwrap().template.spec),
    ];
    for (role, pod) in pods {
        let pod = pod.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false), "{role}");
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let id = env.iter().find(|e| e.name == "SLUICE_SNAPSHOT_KEY_ID");
        assert_eq!(id.and_then(|e| e.value.as_deref()), Some("k1"), "{role}");
        let key = env.iter().find(|e| e.name == "SLUICE_SNAPSHOT_KEY");
        let from = key
            .and_then(|e| e.value_from.clone())
            .and_then(|v| v.secret_key_ref)
            .unwrap_or_else(|| panic!("{role}: no key from a Secret in {env:?}"));
        assert_eq!(
            (from.name.as_str(), from.key.as_str()),
            ("snap", "aes"),
            "{role}"
        );
        assert!(
            key.unwrap().value.is_none(),
            "{role}: the key's value is in the pod spec"
        );
    }
    let cm = c.manifest.data.unwrap()["job.yaml"].clone();
    assert!(!cm.contains("SLUICE_SNAPSHOT_KEY\""), "{cm}");
}

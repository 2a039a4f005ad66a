//! A Kafka broker on the node for jobs on the cluster: `e2e/kafka/broker.sh` with a second
//! listener on the node's address, which pods reach, while the test uses the loopback one.

use crate::{E2eError, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The node's address as pods see it: the local cluster's (`NODE_IP` of
/// `e2e/cluster/env.sh`) unless `SLUICE_E2E_NODE_ADDRESS` names another.
pub fn node_address() -> String {
    std::env::var("SLUICE_E2E_NODE_ADDRESS").unwrap_or_else(|_| "10.200.0.1".into())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka/broker.sh")
}

/// One broker node, stopped (and its state removed) when dropped.
pub struct NodeBroker {
    dir: PathBuf,
    /// For this process (loopback).
    pub bootstrap: String,
    /// For pods: the node's address.
    pub pod_bootstrap: String,
}

impl NodeBroker {
    /// Starts a broker whose state lives in a directory named after `test`.
    pub fn start(test: &str) -> Result<NodeBroker> {
        let dir = std::env::temp_dir().join(format!("sluice-e2e-kafka-{test}"));
        let _ = std::fs::remove_dir_all(&dir);
        let address = node_address();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", "--dir"])
            .arg(&dir)
            .args(["--external-address", &address])
            .output()
            .map_err(|e| E2eError::Config(format!("cannot run e2e/kafka/broker.sh: {e}")))?;
        if !out.status.success() {
            return Err(E2eError::Config(format!(
                "the Kafka broker did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut broker = NodeBroker {
            bootstrap: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            pod_bootstrap: String::new(),
            dir,
        };
        // Dropped (the broker stopped) if the port cannot be read.
        let port = std::fs::read_to_string(broker.dir.join("external-ports"))
            .map_err(|e| E2eError::Config(format!("the broker's external port: {e}")))?;
        broker.pod_bootstrap = format!("{address}:{}", port.trim());
        Ok(broker)
    }

    /// Creates `topic` with `partitions`.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let out = Command::new("bash")
            .arg(script())
            .args(["topic", "--dir"])
            .arg(&self.dir)
            .args(["--name", topic, "--partitions", &partitions.to_string()])
            .output()
            .map_err(|e| E2eError::Config(format!("cannot run e2e/kafka/broker.sh: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(E2eError::Config(format!(
                "creating topic {topic}: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Every record value of `topic` a read_committed consumer sees now, read to the end of
    /// every partition.
    pub fn read_committed(&self, topic: &str) -> Result<Vec<String>> {
        let kafka = |e: KafkaError| E2eError::Config(format!("reading {topic}: {e}"));
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "sluice-e2e-reader")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(kafka)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(kafka)?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(kafka)?;
        }
        consumer.assign(&assignment).map_err(kafka)?;
        let mut values = Vec::new();
        let mut at_end: HashSet<i32> = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while at_end.len() < partitions as usize {
            if Instant::now() >= deadline {
                return Err(E2eError::Timeout {
                    what: format!("the end of every partition of {topic}"),
                    timeout: Duration::from_secs(120),
                });
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => {
                    values.push(String::from_utf8_lossy(m.payload().unwrap_or(&[])).into_owned())
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                // The client retries what it can; the deadline bounds the rest.
                Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            }
        }
        Ok(values)
    }
}

impl Drop for NodeBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

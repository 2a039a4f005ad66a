//! Connection settings shared by the Kafka source and sink.

use crate::error::Error;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a client waits for the brokers when it starts.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the brokers are and how to talk to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaClientConfig {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// librdkafka client properties, passed through (`security.protocol`, `sasl.*`,
    /// `ssl.*`, `compression.type`, …). A value `${NAME}` is replaced by the environment
    /// variable `NAME` when the client is created, so credentials need not be in the config.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl KafkaClientConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaClientConfig {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    pub fn with_property(mut self, key: &str, value: &str) -> Self {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }

    /// A librdkafka configuration: our `defaults` first, then the user's properties.
    pub(crate) fn client_config(&self, defaults: &[(&str, &str)]) -> Result<ClientConfig, Error> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers);
        // Our threads report errors; librdkafka's log lines are for debugging only.
        config.set_log_level(RDKafkaLogLevel::Error);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, resolve_env(v).map_err(|message| self.error(message))?);
        }
        Ok(config)
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        Error::Kafka {
            what: format!("(brokers {})", self.bootstrap_servers),
            message: message.into(),
        }
    }
}

/// `${NAME}` → the value of environment variable `NAME`; anything else as written.
fn resolve_env(value: &str) -> Result<String, String> {
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(name) => std::env::var(name).map_err(|_| {
            format!("property value ${{{name}}}: environment variable {name} is not set")
        }),
        None => Ok(value.to_string()),
    }
}

/// `kafka://host:port[,host:port…]/topic`; the brokers may be left out
/// (`kafka:///topic`) when the job's `kafka` block names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaUri {
    pub bootstrap_servers: Option<String>,
    pub topic: String,
}

impl KafkaUri {
    pub const SCHEME: &'static str = "kafka://";

    /// `None` when `text` is not a `kafka://` URI.
    pub fn parse(text: &str) -> Option<Result<KafkaUri, String>> {
        let rest = text.strip_prefix(Self::SCHEME)?;
        Some(match rest.split_once('/') {
            Some((servers, topic)) if !topic.is_empty() && !topic.contains('/') => Ok(KafkaUri {
                bootstrap_servers: (!servers.is_empty()).then(|| servers.to_string()),
                topic: topic.to_string(),
            }),
            _ => Err(format!(
                "'{text}' is not a Kafka URI like kafka://host:9092/topic"
            )),
        })
    }
}

pub(crate) fn partition_count(client: &KafkaClientConfig, topic: &str) -> Result<usize, Error> {
    partition_count_with(&metadata_client(client)?, client, topic)
}

/// A client for metadata requests.
pub(crate) fn metadata_client(client: &KafkaClientConfig) -> Result<BaseConsumer, Error> {
    client
        .client_config(&[])?
        .create()
        .map_err(|e| client.error(format!("cannot create a client: {e}")))
}

/// [`partition_count`] through a client made by [`metadata_client`].
pub(crate) fn partition_count_with(
    consumer: &BaseConsumer,
    client: &KafkaClientConfig,
    topic: &str,
) -> Result<usize, Error> {
    let metadata = consumer
        .fetch_metadata(Some(topic), CONNECT_TIMEOUT)
        .map_err(|e| {
            client.error(format!(
                "no broker answered within {CONNECT_TIMEOUT:?} ({e})"
            ))
        })?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        Some(t) => Err(Error::Kafka {
            what: format!("topic '{topic}'"),
            message: match t.error() {
                Some(e) => format!(
                    "not available at {}: {}",
                    client.bootstrap_servers,
                    rdkafka::types::RDKafkaErrorCode::from(e)
                ),
                None => format!("has no partitions at {}", client.bootstrap_servers),
            },
        }),
        None => Err(Error::Kafka {
            what: format!("topic '{topic}'"),
            message: format!("does not exist at {}", client.bootstrap_servers),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_uris_name_brokers_and_topic() {
        assert_eq!(
            KafkaUri::parse("kafka://a:9092,b:9092/bids")
                .unwrap()
                .unwrap(),
            KafkaUri {
                bootstrap_servers: Some("a:9092,b:9092".into()),
                topic: "bids".into()
            }
        );
        assert_eq!(
            KafkaUri::parse("kafka:///bids")
                .unwrap()
                .unwrap()
                .bootstrap_servers,
            None
        );
        assert!(KafkaUri::parse("kafka://a:9092").unwrap().is_err());
        assert!(KafkaUri::parse("/tmp/out").is_none());
    }

    #[test]
    fn property_values_may_come_from_the_environment() {
        assert_eq!(resolve_env("plain").unwrap(), "plain");
        let err = resolve_env("${SLUICE_TEST_SURELY_UNSET_VARIABLE}").unwrap_err();
        assert!(err.contains("SLUICE_TEST_SURELY_UNSET_VARIABLE"), "{err}");
    }
}

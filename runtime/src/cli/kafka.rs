//! `sluice nexmark produce`: generated events into a Kafka topic.

use super::GeneratorArgs;
use crate::error::Error;

#[derive(clap::Args)]
// Read only by the Kafka build.
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
pub(super) struct ProduceArgs {
    /// The topic: `kafka://host:port[,host:port…]/topic` (it must exist).
    topic: String,
    #[command(flatten)]
    generator: GeneratorArgs,
    /// The number of the first event to write (`--first`..`--events`): appends to a topic
    /// filled in stages.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// A client property (`key=value`, repeatable), e.g. `security.protocol=SASL_SSL`; a
    /// value `${NAME}` is read from environment variable `NAME`.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
}

#[cfg(feature = "kafka")]
pub(super) fn produce(args: ProduceArgs) -> Result<(), Error> {
    use crate::connectors::kafka::{produce_nexmark, KafkaClientConfig, KafkaUri};
    let uri = KafkaUri::parse(&args.topic)
        .unwrap_or_else(|| Err(format!("'{}' is not a kafka:// URI", args.topic)))
        .map_err(Error::Config)?;
    let servers = uri
        .bootstrap_servers
        .ok_or_else(|| Error::Config(format!("'{}' names no brokers", args.topic)))?;
    let mut client = KafkaClientConfig::new(servers);
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--property '{p}' is not key=value")))?;
        client.properties.insert(k.to_string(), v.to_string());
    }
    let config = args.generator.config()?;
    let started = std::time::Instant::now();
    if args.first > config.events {
        return Err(Error::Config(format!(
            "--first {} is beyond --events {}",
            args.first, config.events
        )));
    }
    let partitions = produce_nexmark(&client, &uri.topic, &config, args.first)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} events into {} partition(s) of '{}' in {secs:.1}s ({:.0} events/s)",
        config.events - args.first,
        partitions,
        uri.topic,
        (config.events - args.first) as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[cfg(not(feature = "kafka"))]
pub(super) fn produce(_: ProduceArgs) -> Result<(), Error> {
    Err(Error::Config(
        "this binary was built without Kafka support (cargo feature `kafka`)".into(),
    ))
}

//! What flows through a job: records, the values they carry, and the keys that partition
//! them.

use crate::time::EventTime;

/// A value with the event time it carries. Records without an event time carry
/// `EventTime::MIN`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record<T> {
    pub ts: EventTime,
    pub value: T,
}

impl<T> Record<T> {
    pub fn new(ts: EventTime, value: T) -> Self {
        Record { ts, value }
    }
}

/// One of two values; the result of `Stream::split`'s routing function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Either<L, R> {
    Left(L),
    Right(R),
}

/// What can flow between operators.
pub trait Data: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static {}
impl<T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static> Data for T {}

/// What can partition a stream: hashed stably (the same key lands in the same key group in
/// every process and every run), used as a state key, and written into snapshots.
pub trait Key:
    std::hash::Hash
    + Eq
    + Clone
    + Send
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
{
}
impl<T> Key for T where
    T: std::hash::Hash
        + Eq
        + Clone
        + Send
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static
{
}

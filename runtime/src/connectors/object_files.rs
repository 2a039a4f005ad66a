//! A two-phase-commit sink writing part files — JSON lines or Parquet — to object storage
//! (`s3://bucket/prefix`, `file:///dir`), partitioned by event-time bucket.
//!
//! A subtask streams each part, as it encodes it, into a multipart upload to a hidden key
//! under `_pending/`. An upload is invisible until it is completed, and it is completed when
//! the part closes: at a snapshot barrier, or earlier when the part reaches its size or age
//! limit. The barrier lists the closed parts in the snapshot; when the snapshot completes,
//! each part is copied to its final key and the hidden object deleted. A copy appears whole
//! or not at all, so a reader of the prefix never sees a partial object, and only sees
//! records of completed snapshots. Committing again is harmless, which is how a job restored
//! from a snapshot commits whatever that snapshot lists; hidden objects of attempts that
//! failed are deleted when the next run opens its writers.
//!
//! Uploads a killed process left incomplete are never listed; S3 keeps their parts until a
//! bucket lifecycle rule (`AbortIncompleteMultipartUpload`) removes them.

use super::{Sink, SinkContext, SinkWriter};
use crate::api::Record;
use crate::error::{causes, Error};
use crate::objects;
use crate::sink::ObjectTransaction;
use crate::snapshot::SinkTransaction;
use crate::time::EventTime;
use arrow_schema::{FieldRef, Schema};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_arrow::schema::{SchemaLike, TracingOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where parts are uploaded until their snapshot completes.
pub const PENDING: &str = "_pending";

/// Parts uploading at once per writer; a writer that gets ahead of the store waits.
const MAX_UPLOADS: usize = 4;

/// A Parquet row group is written out once its encoded columns reach this size.
const ROW_GROUP_BYTES: usize = 32 << 20;

/// How the sink writes (`spec.job.config.sink.files`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSinkOptions {
    #[serde(default)]
    pub format: FileFormat,
    /// A part closes once this many bytes are written to it.
    #[serde(default = "default_max_part_bytes")]
    pub max_part_bytes: u64,
    /// A part closes at the first write after it is this old. Parts also close at every
    /// checkpoint: their output becomes visible when the checkpoint completes.
    #[serde(default)]
    pub max_part_age_ms: Option<u64>,
    /// Parts go to a directory per event-time bucket of their records.
    #[serde(default)]
    pub partition_by: PartitionBy,
}

impl Default for FileSinkOptions {
    fn default() -> Self {
        FileSinkOptions {
            format: FileFormat::default(),
            max_part_bytes: default_max_part_bytes(),
            max_part_age_ms: None,
            partition_by: PartitionBy::default(),
        }
    }
}

fn default_max_part_bytes() -> u64 {
    128 << 20
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// One JSON document per line (`.jsonl`).
    #[default]
    Jsonl,
    /// Parquet (`.parquet`, Snappy-compressed), its schema traced from the record type.
    Parquet,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// Event-time bucketing of parts into directories (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionBy {
    /// Every part directly under the prefix.
    #[default]
    None,
    /// `date=YYYY-MM-DD/`
    Day,
    /// `date=YYYY-MM-DD/hour=HH/`
    Hour,
}

impl PartitionBy {
    fn bucket_millis(self) -> Option<i64> {
        match self {
            PartitionBy::None => None,
            PartitionBy::Day => Some(86_400_000),
            PartitionBy::Hour => Some(3_600_000),
        }
    }

    /// The bucket of a record's event time: the same number for every time of one bucket.
    fn bucket(self, ts: EventTime) -> i64 {
        match self.bucket_millis() {
            Some(len) if ts != EventTime::MIN && ts != EventTime::MAX => ts.0.div_euclid(len),
            // No time (`MIN`/`MAX`), or no partitioning.
            _ => i64::MIN,
        }
    }

    /// The directory of a bucket, with its trailing `/`, or nothing.
    fn directory(self, bucket: i64) -> String {
        let Some(len) = self.bucket_millis() else {
            return String::new();
        };
        if bucket == i64::MIN {
            return "date=unknown/".into();
        }
        let start = bucket.saturating_mul(len);
        let (y, m, d) = civil_date(start.div_euclid(86_400_000));
        match self {
            PartitionBy::Hour => {
                let hour = start.rem_euclid(86_400_000) / 3_600_000;
                format!("date={y:04}-{m:02}-{d:02}/hour={hour:02}/")
            }
            _ => format!("date={y:04}-{m:02}-{d:02}/"),
        }
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Days since 0000-03-01, in 400-year eras of 146097 days; March first, so that the
    // leap day ends a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes a job's output as part files under an object-storage URI.
pub struct ObjectFileSink {
    uri: String,
    options: FileSinkOptions,
}

impl ObjectFileSink {
    /// Fails, naming the URI, when it is not a store Sluice can write to.
    pub fn new(uri: &str, options: FileSinkOptions) -> Result<Self, Error> {
        let uri = uri.trim_end_matches('/').to_string();
        objects::shared(&uri).map_err(|message| Error::ObjectStore {
            uri: uri.clone(),
            message,
        })?;
        Ok(ObjectFileSink { uri, options })
    }

    /// The keys of the committed parts under `uri`, in name order.
    pub fn committed_parts(uri: &str) -> Result<Vec<String>, Error> {
        let fail = |message: String| Error::ObjectStore {
            uri: uri.to_string(),
            message,
        };
        let store = objects::shared(uri.trim_end_matches('/')).map_err(fail)?;
        let mut keys: Vec<String> = objects::block_on(store.list(None).try_collect::<Vec<_>>())
            .map_err(fail)?
            .map_err(|e| fail(causes(&e)))?
            .into_iter()
            .map(|meta| meta.location.to_string())
            .filter(|key| !key.starts_with(PENDING) && is_part(key))
            .collect();
        keys.sort();
        Ok(keys)
    }
}

impl ObjectFileSink {
    /// The records of a part as read back from storage (`key` names it, its extension the
    /// format); an error if it is not a whole part.
    pub fn read_part<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<Vec<T>, Error> {
        let bad = |message: String| Error::Input {
            origin: key.to_string(),
            message,
        };
        if key.ends_with(".jsonl") {
            let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
            if !text.is_empty() && !text.ends_with('\n') {
                return Err(bad("the last line is incomplete".into()));
            }
            text.lines()
                .enumerate()
                .map(|(i, line)| {
                    serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", i + 1)))
                })
                .collect()
        } else if key.ends_with(".parquet") {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes))
                    .and_then(|builder| builder.build())
                    .map_err(|e| bad(e.to_string()))?;
            let mut records = Vec::new();
            for batch in reader {
                let batch = batch.map_err(|e| bad(e.to_string()))?;
                let rows: Vec<T> =
                    serde_arrow::from_record_batch(&batch).map_err(|e| bad(e.to_string()))?;
                records.extend(rows);
            }
            Ok(records)
        } else {
            Err(bad("not a part (.jsonl or .parquet)".into()))
        }
    }
}

fn is_part(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.starts_with("part-")
}

impl<T: Serialize + DeserializeOwned + 'static> Sink<T> for ObjectFileSink {
    fn open(&self, cx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error> {
        let fail = |message: String| Error::ObjectStore {
            uri: self.uri.clone(),
            message,
        };
        let store = objects::shared(&self.uri).map_err(fail)?;
        discard_stale_pending(store.as_ref(), &cx.run_id).map_err(fail)?;
        let schema = match self.options.format {
            FileFormat::Jsonl => None,
            FileFormat::Parquet => {
                let fields =
                    Vec::<FieldRef>::from_type::<T>(TracingOptions::default()).map_err(|e| {
                        fail(format!(
                            "cannot derive a Parquet schema from the record type: {e}"
                        ))
                    })?;
                Some(fields)
            }
        };
        Ok(Box::new(ObjectFileWriter {
            uri: self.uri.clone(),
            store,
            options: self.options.clone(),
            subtask: cx.subtask,
            run_id: cx.run_id.clone(),
            seq: 0,
            schema,
            parts: Vec::new(),
            closed: Vec::new(),
            transactions: Vec::new(),
            _records: std::marker::PhantomData,
        }))
    }
}

/// Deletes hidden parts of earlier runs: whatever of them a completed snapshot listed was
/// committed before this run started, the rest belongs to no snapshot.
fn discard_stale_pending(store: &dyn ObjectStore, run_id: &str) -> Result<(), String> {
    let marker = format!("-{run_id}-");
    let pending = ObjectPath::from(PENDING);
    objects::block_on(async {
        let stale: Vec<_> = store
            .list(Some(&pending))
            .try_filter(|meta| std::future::ready(!meta.location.as_ref().contains(&marker)))
            .try_collect()
            .await?;
        for meta in stale {
            match store.delete(&meta.location).await {
                // Another subtask of this run deleted it first.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })?
    .map_err(|e| causes(&e))
}

/// One part being written: its upload to the hidden key and its encoder.
struct Part {
    bucket: i64,
    pending: String,
    committed: String,
    upload: WriteMultipart,
    encoder: Encoder,
    /// Encoded bytes handed to the upload.
    uploaded: u64,
    opened: Instant,
}

enum Encoder {
    Lines(Vec<u8>),
    Parquet {
        writer: Box<ArrowWriter<Vec<u8>>>,
        rows: serde_arrow::ArrayBuilder,
        buffered: usize,
    },
}

struct ObjectFileWriter<T> {
    uri: String,
    store: Arc<dyn ObjectStore>,
    options: FileSinkOptions,
    subtask: usize,
    run_id: String,
    seq: u64,
    schema: Option<Vec<FieldRef>>,
    parts: Vec<Part>,
    /// Parts uploaded since the last barrier: (hidden key, final key).
    closed: Vec<(String, String)>,
    /// Pre-committed, not yet known to be committed.
    transactions: Vec<ObjectTransaction>,
    _records: std::marker::PhantomData<fn(T)>,
}

impl<T> ObjectFileWriter<T> {
    fn store_error(&self, message: String) -> Error {
        Error::ObjectStore {
            uri: self.uri.clone(),
            message,
        }
    }

    fn encode_error(&self, part: &str, message: impl std::fmt::Display) -> Error {
        Error::Input {
            origin: format!("{}/{part}", self.uri),
            message: format!("cannot encode record: {message}"),
        }
    }

    /// The index of the open part of `bucket`, opening one if there is none.
    fn part(&mut self, bucket: i64) -> Result<usize, Error> {
        if let Some(i) = self.parts.iter().position(|p| p.bucket == bucket) {
            return Ok(i);
        }
        let name = format!(
            "part-{:04}-{}-{:06}.{}",
            self.subtask,
            self.run_id,
            self.seq,
            self.options.format.extension()
        );
        self.seq += 1;
        let pending = format!("{PENDING}/{name}");
        let committed = format!("{}{name}", self.options.partition_by.directory(bucket));
        let location = ObjectPath::from(pending.as_str());
        let upload = objects::block_on(self.store.put_multipart(&location))
            .map_err(|e| self.store_error(e))?
            .map_err(|e| self.store_error(causes(&e)))?;
        let encoder = match &self.schema {
            None => Encoder::Lines(Vec::with_capacity(1 << 16)),
            Some(fields) => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let schema = Arc::new(Schema::new(fields.clone()));
                let writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties))
                    .map_err(|e| self.encode_error(&pending, e))?;
                let rows = serde_arrow::ArrayBuilder::from_arrow(fields)
                    .map_err(|e| self.encode_error(&pending, e))?;
                Encoder::Parquet {
                    writer: Box::new(writer),
                    rows,
                    buffered: 0,
                }
            }
        };
        self.parts.push(Part {
            bucket,
            pending,
            committed,
            upload: WriteMultipart::new(upload),
            encoder,
            uploaded: 0,
            opened: Instant::now(),
        });
        Ok(self.parts.len() - 1)
    }

    /// Hands what the parts encoded to their uploads; waits while too many are in flight.
    fn upload_encoded(&mut self) -> Result<(), Error> {
        let runtime = objects::runtime().map_err(|e| self.store_error(e))?;
        // Starting a part's upload spawns it on the runtime.
        let _entered = runtime.enter();
        for i in 0..self.parts.len() {
            let part = &mut self.parts[i];
            match &mut part.encoder {
                Encoder::Lines(lines) => {
                    part.uploaded += lines.len() as u64;
                    part.upload.write(lines);
                    lines.clear();
                }
                Encoder::Parquet {
                    writer,
                    rows,
                    buffered,
                } => {
                    if *buffered > 0 {
                        *buffered = 0;
                        let written = rows
                            .to_record_batch()
                            .map_err(|e| e.to_string())
                            .and_then(|batch| writer.write(&batch).map_err(|e| e.to_string()));
                        if let Err(e) = written {
                            let pending = self.parts[i].pending.clone();
                            return Err(self.encode_error(&pending, e));
                        }
                        if writer.in_progress_size() >= ROW_GROUP_BYTES {
                            if let Err(e) = writer.flush() {
                                let pending = self.parts[i].pending.clone();
                                return Err(self.encode_error(&pending, e));
                            }
                        }
                    }
                    let bytes = std::mem::take(writer.inner_mut());
                    part.uploaded += bytes.len() as u64;
                    part.upload.put(bytes.into());
                }
            }
            let capacity = runtime.block_on(part.upload.wait_for_capacity(MAX_UPLOADS));
            if let Err(e) = capacity {
                return Err(self.store_error(causes(&e)));
            }
        }
        Ok(())
    }

    /// The bytes a part holds so far, encoded or buffered for encoding.
    fn size(part: &Part) -> u64 {
        match &part.encoder {
            Encoder::Lines(_) => part.uploaded,
            Encoder::Parquet { writer, .. } => part.uploaded + writer.in_progress_size() as u64,
        }
    }

    /// Closes the parts that reached their size or age limit (all of them with `all`).
    fn close_parts(&mut self, all: bool) -> Result<(), Error> {
        let max_age = self.options.max_part_age_ms.map(Duration::from_millis);
        let mut i = 0;
        while i < self.parts.len() {
            let part = &self.parts[i];
            let full = Self::size(part) >= self.options.max_part_bytes;
            let old = max_age.is_some_and(|age| part.opened.elapsed() >= age);
            if all || full || old {
                let part = self.parts.swap_remove(i);
                self.close(part)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Completes a part's upload: the hidden object then exists, whole.
    fn close(&mut self, mut part: Part) -> Result<(), Error> {
        if let Encoder::Parquet { writer, .. } = &mut part.encoder {
            writer
                .finish()
                .map_err(|e| self.encode_error(&part.pending, e))?;
            let footer = std::mem::take(writer.inner_mut());
            let runtime = objects::runtime().map_err(|e| self.store_error(e))?;
            let _entered = runtime.enter();
            part.upload.put(footer.into());
        }
        objects::block_on(part.upload.finish())
            .map_err(|e| self.store_error(e))?
            .map_err(|e| self.store_error(format!("{}: {}", part.pending, causes(&e))))?;
        self.closed.push((part.pending, part.committed));
        Ok(())
    }
}

impl<T: Serialize> SinkWriter<T> for ObjectFileWriter<T> {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let partition_by = self.options.partition_by;
        let mut current: Option<(i64, usize)> = None;
        for record in batch {
            let bucket = partition_by.bucket(record.ts);
            let index = match current {
                Some((b, i)) if b == bucket => i,
                _ => {
                    let i = self.part(bucket)?;
                    current = Some((bucket, i));
                    i
                }
            };
            let part = &mut self.parts[index];
            let encoded = match &mut part.encoder {
                Encoder::Lines(lines) => serde_json::to_writer(&mut *lines, &record.value)
                    .map(|()| lines.push(b'\n'))
                    .map_err(|e| e.to_string()),
                Encoder::Parquet { rows, buffered, .. } => {
                    *buffered += 1;
                    rows.push(&record.value).map_err(|e| e.to_string())
                }
            };
            if let Err(e) = encoded {
                let pending = part.pending.clone();
                return Err(self.encode_error(&pending, e));
            }
        }
        self.upload_encoded()?;
        self.close_parts(false)
    }

    fn finish(&mut self) -> Result<(), Error> {
        // The last barrier closes the parts.
        Ok(())
    }

    fn visible_on_commit(&self) -> bool {
        true
    }

    fn pre_commit(
        &mut self,
        checkpoint: u64,
        committed: u64,
    ) -> Result<Vec<SinkTransaction>, Error> {
        self.close_parts(true)?;
        for (pending, final_key) in self.closed.drain(..) {
            self.transactions.push(ObjectTransaction {
                checkpoint,
                uri: self.uri.clone(),
                pending,
                committed: final_key,
            });
        }
        self.transactions.retain(|t| t.checkpoint > committed);
        Ok(self
            .transactions
            .iter()
            .cloned()
            .map(SinkTransaction::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_the_calendar() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        // 2000 was a leap year (divisible by 400), 1900 was not.
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(-25_508), (1900, 3, 1));
        assert_eq!(civil_date(-25_509), (1900, 2, 28));
        assert_eq!(civil_date(20_793), (2026, 12, 6));
    }

    #[test]
    fn records_go_to_the_directory_of_their_event_time_bucket() {
        // 2026-12-06T03:59:59.999Z and a millisecond later.
        let before = EventTime(1_796_529_599_999);
        let after = EventTime(1_796_529_600_000);
        let hour = PartitionBy::Hour;
        assert_eq!(
            hour.directory(hour.bucket(before)),
            "date=2026-12-06/hour=03/"
        );
        assert_eq!(
            hour.directory(hour.bucket(after)),
            "date=2026-12-06/hour=04/"
        );
        let day = PartitionBy::Day;
        assert_eq!(day.bucket(before), day.bucket(after));
        assert_eq!(day.directory(day.bucket(after)), "date=2026-12-06/");
        assert_eq!(hour.directory(hour.bucket(EventTime::MIN)), "date=unknown/");
        assert_eq!(
            PartitionBy::None.directory(PartitionBy::None.bucket(after)),
            ""
        );
    }

    #[test]
    fn a_partial_part_is_not_read_as_whole() {
        let whole = b"{\"a\":1}\n{\"a\":2}\n";
        let rows: Vec<serde_json::Value> = ObjectFileSink::read_part("p.jsonl", whole).unwrap();
        assert_eq!(rows.len(), 2);
        let cut = &whole[..whole.len() - 3];
        let e = ObjectFileSink::read_part::<serde_json::Value>("x/p.jsonl", cut).unwrap_err();
        assert!(e.to_string().starts_with("x/p.jsonl: "), "{e}");
        assert!(ObjectFileSink::read_part::<serde_json::Value>("p.parquet", b"PAR1").is_err());
    }
}

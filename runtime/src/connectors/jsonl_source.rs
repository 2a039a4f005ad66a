//! A source of records read from a JSON-lines file, one record per line.
//!
//! Split `j` of `k` reads lines `j, j + k, j + 2k, …`: every split advances through the file,
//! and so through event time, at the same pace, and the number of splits is chosen by the job,
//! not by its parallelism, so positions restore at any parallelism. A split's position is the
//! number of its lines read (blank lines count, and are skipped); a file has no index, so a
//! restored split reads up to its position.

use super::{Poll, Source, SplitReader};
use crate::error::Error;
use crate::record::Record;
use crate::time::EventTime;
use serde::de::DeserializeOwned;
use std::io::{BufRead, BufReader, Lines};
use std::marker::PhantomData;
use std::path::PathBuf;

/// Records of type `T` from a JSON-lines file; `timestamp` gives each record's event time.
pub struct JsonLinesSource<T> {
    path: PathBuf,
    splits: usize,
    timestamp: fn(&T) -> EventTime,
}

impl<T> JsonLinesSource<T> {
    pub fn new(path: impl Into<PathBuf>, splits: usize, timestamp: fn(&T) -> EventTime) -> Self {
        JsonLinesSource {
            path: path.into(),
            splits: splits.max(1),
            timestamp,
        }
    }
}

struct LineSplit<T> {
    lines: Lines<BufReader<std::fs::File>>,
    path: PathBuf,
    timestamp: fn(&T) -> EventTime,
    /// Lines of the file read so far.
    line_no: u64,
    split: u64,
    step: u64,
    /// Lines of this split read so far: the position a snapshot records.
    consumed: u64,
    _records: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + 'static> Source<T> for JsonLinesSource<T> {
    fn split_count(&self) -> usize {
        self.splits
    }

    fn open_split(&self, split: usize, offset: u64) -> Result<Box<dyn SplitReader<T>>, Error> {
        let file = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut reader = LineSplit {
            lines: BufReader::with_capacity(1 << 16, file).lines(),
            path: self.path.clone(),
            timestamp: self.timestamp,
            line_no: 0,
            split: split as u64,
            step: self.splits as u64,
            consumed: offset,
            _records: PhantomData,
        };
        let first = (split as u64).saturating_add(offset.saturating_mul(reader.step));
        while reader.line_no < first {
            match reader.lines.next() {
                Some(line) => {
                    line.map_err(|e| Error::io(&self.path, e))?;
                    reader.line_no += 1;
                }
                None => break,
            }
        }
        Ok(Box::new(reader))
    }
}

impl<T: DeserializeOwned> SplitReader<T> for LineSplit<T> {
    fn poll(&mut self, out: &mut Vec<Record<T>>, max: usize) -> Result<Poll, Error> {
        let mut produced = 0;
        while produced < max {
            let Some(line) = self.lines.next() else {
                return Ok(Poll::End);
            };
            let line = line.map_err(|e| Error::io(&self.path, e))?;
            self.line_no += 1;
            if (self.line_no - 1) % self.step != self.split {
                continue;
            }
            if line.trim().is_empty() {
                self.consumed += 1;
                continue;
            }
            let value: T = serde_json::from_str(&line).map_err(|e| Error::Input {
                origin: self.path.display().to_string(),
                message: format!("line {}: {e}", self.line_no),
            })?;
            self.consumed += 1;
            out.push(Record::new((self.timestamp)(&value), value));
            produced += 1;
        }
        Ok(Poll::More)
    }

    fn position(&self) -> u64 {
        self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Write;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Reading {
        ts: i64,
        value: u32,
    }

    fn at(r: &Reading) -> EventTime {
        EventTime(r.ts)
    }

    fn file_of(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        file
    }

    fn read_split(source: &JsonLinesSource<Reading>, split: usize, offset: u64) -> Vec<u32> {
        let mut reader = source.open_split(split, offset).unwrap();
        let mut out = Vec::new();
        while reader.poll(&mut out, 2).unwrap() == Poll::More {}
        out.iter()
            .map(|r| {
                assert_eq!(r.ts, EventTime(r.value.ts));
                r.value.value
            })
            .collect()
    }

    #[test]
    fn splits_interleave_lines_and_restore_at_their_position() {
        let lines: Vec<String> = (0..7)
            .map(|i| format!(r#"{{"ts":{},"value":{i}}}"#, 1000 + i))
            .collect();
        let file = file_of(&lines.iter().map(String::as_str).collect::<Vec<_>>());
        let source = JsonLinesSource::new(file.path(), 3, at);
        assert_eq!(read_split(&source, 0, 0), [0, 3, 6]);
        assert_eq!(read_split(&source, 1, 0), [1, 4]);
        assert_eq!(read_split(&source, 2, 0), [2, 5]);
        // Two lines of split 0 were read before the snapshot: it goes on with the third.
        assert_eq!(read_split(&source, 0, 2), [6]);
    }

    #[test]
    fn a_bad_line_is_reported_with_the_file_and_line_and_blank_lines_are_skipped() {
        let file = file_of(&[r#"{"ts":1,"value":1}"#, "", r#"{"ts":2,"value":"x"}"#]);
        let source = JsonLinesSource::new(file.path(), 1, at);
        let mut reader = source.open_split(0, 0).unwrap();
        let mut out = Vec::new();
        let err = reader.poll(&mut out, 10).unwrap_err().to_string();
        assert_eq!(out.len(), 1);
        // The bad line is not counted as read.
        assert_eq!(reader.position(), 2);
        assert!(
            err.contains(&file.path().display().to_string()) && err.contains("line 3: "),
            "{err}"
        );
    }
}

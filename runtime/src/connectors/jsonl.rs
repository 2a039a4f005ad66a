use super::{Sink, SinkWriter};
use crate::api::Record;
use crate::error::Error;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Writes each record as one JSON line. With parallelism above one, subtask `i` writes
/// `<path>.<i>`; with one, `<path>` itself.
pub struct JsonLinesSink {
    path: PathBuf,
}

impl JsonLinesSink {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesSink { path: path.into() }
    }

    /// The files a sink of `parallelism` subtasks writes.
    pub fn files(path: &std::path::Path, parallelism: usize) -> Vec<PathBuf> {
        if parallelism == 1 {
            vec![path.to_path_buf()]
        } else {
            (0..parallelism)
                .map(|i| {
                    let mut p = path.as_os_str().to_owned();
                    p.push(format!(".{i}"));
                    PathBuf::from(p)
                })
                .collect()
        }
    }
}

struct JsonLinesWriter {
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
}

impl<T: Serialize + 'static> Sink<T> for JsonLinesSink {
    fn open(&self, subtask: usize, parallelism: usize) -> Result<Box<dyn SinkWriter<T>>, Error> {
        let path = Self::files(&self.path, parallelism)
            .swap_remove(subtask.min(parallelism.saturating_sub(1)));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Box::new(JsonLinesWriter {
            path,
            out: BufWriter::with_capacity(1 << 16, file),
            line: Vec::with_capacity(256),
        }))
    }
}

impl<T: Serialize> SinkWriter<T> for JsonLinesWriter {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        for r in batch {
            self.line.clear();
            serde_json::to_writer(&mut self.line, &r.value).map_err(|e| Error::Input {
                origin: self.path.display().to_string(),
                message: format!("cannot encode record: {e}"),
            })?;
            self.line.push(b'\n');
            self.out
                .write_all(&self.line)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }
}

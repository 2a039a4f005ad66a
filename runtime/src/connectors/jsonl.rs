//! A two-phase-commit sink writing JSON lines into part files of a directory.
//!
//! Records go to a hidden file under `<dir>/.pending/`. When a snapshot barrier arrives the
//! file is flushed and closed (pre-commit); when the snapshot completes it is renamed to
//! `<dir>/part-<subtask>-<run>-<seq>.jsonl` (commit). A reader of `<dir>` therefore only ever
//! sees complete files holding records of completed snapshots, and a job restored from a
//! snapshot commits again whatever that snapshot lists (renaming is idempotent) and discards
//! the pending files of the attempt that failed.

use super::{Sink, SinkContext, SinkWriter};
use crate::api::Record;
use crate::error::Error;
use crate::snapshot::{FileTransaction, SinkTransaction};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct JsonLinesSink {
    dir: PathBuf,
}

const PENDING: &str = ".pending";

impl JsonLinesSink {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonLinesSink { dir: dir.into() }
    }

    /// The committed part files of an output directory, in name order.
    pub fn committed_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
        let mut files = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("part-") && name.ends_with(".jsonl") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Every committed line of an output directory, in file order.
    pub fn committed_lines(dir: &Path) -> Result<Vec<String>, Error> {
        let mut lines = Vec::new();
        for file in Self::committed_files(dir)? {
            let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
            lines.extend(text.lines().map(str::to_string));
        }
        Ok(lines)
    }
}

struct OpenFile {
    pending: PathBuf,
    out: BufWriter<File>,
}

struct JsonLinesWriter {
    dir: PathBuf,
    subtask: usize,
    run_id: String,
    seq: u64,
    file: Option<OpenFile>,
    /// Pre-committed, not yet known to be committed.
    transactions: Vec<FileTransaction>,
    line: Vec<u8>,
}

/// Removes pending files of earlier attempts: whatever of them a completed snapshot listed
/// was committed before this run started, the rest belongs to no snapshot.
fn discard_stale_pending(pending_dir: &Path, run_id: &str) -> Result<(), Error> {
    let marker = format!("-{run_id}-");
    for entry in std::fs::read_dir(pending_dir).map_err(|e| Error::io(pending_dir, e))? {
        let path = entry.map_err(|e| Error::io(pending_dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.contains(&marker) {
            match std::fs::remove_file(&path) {
                // Another subtask of this run removed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(|e| Error::io(&path, e))?,
            }
        }
    }
    Ok(())
}

impl<T: Serialize + 'static> Sink<T> for JsonLinesSink {
    fn open(&self, cx: &SinkContext) -> Result<Box<dyn SinkWriter<T>>, Error> {
        let pending_dir = self.dir.join(PENDING);
        std::fs::create_dir_all(&pending_dir).map_err(|e| Error::io(&pending_dir, e))?;
        discard_stale_pending(&pending_dir, &cx.run_id)?;
        Ok(Box::new(JsonLinesWriter {
            dir: self.dir.clone(),
            subtask: cx.subtask,
            run_id: cx.run_id.clone(),
            seq: 0,
            file: None,
            transactions: Vec::new(),
            line: Vec::with_capacity(256),
        }))
    }
}

impl JsonLinesWriter {
    fn name(&self) -> String {
        format!(
            "part-{:04}-{}-{:06}.jsonl",
            self.subtask, self.run_id, self.seq
        )
    }

    fn file(&mut self) -> Result<&mut OpenFile, Error> {
        if self.file.is_none() {
            let pending = self.dir.join(PENDING).join(self.name());
            let f = File::create(&pending).map_err(|e| Error::io(&pending, e))?;
            self.file = Some(OpenFile {
                pending,
                out: BufWriter::with_capacity(1 << 16, f),
            });
        }
        self.file
            .as_mut()
            .ok_or_else(|| Error::Graph("sink file vanished".into()))
    }
}

impl<T: Serialize> SinkWriter<T> for JsonLinesWriter {
    fn write(&mut self, batch: &[Record<T>]) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut line = std::mem::take(&mut self.line);
        let file = self.file()?;
        for r in batch {
            line.clear();
            serde_json::to_writer(&mut line, &r.value).map_err(|e| Error::Input {
                origin: file.pending.display().to_string(),
                message: format!("cannot encode record: {e}"),
            })?;
            line.push(b'\n');
            file.out
                .write_all(&line)
                .map_err(|e| Error::io(&file.pending, e))?;
        }
        self.line = line;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Error> {
        match &mut self.file {
            Some(f) => f.out.flush().map_err(|e| Error::io(&f.pending, e)),
            None => Ok(()),
        }
    }

    fn visible_on_commit(&self) -> bool {
        true
    }

    fn pre_commit(
        &mut self,
        checkpoint: u64,
        committed: u64,
    ) -> Result<Vec<SinkTransaction>, Error> {
        if let Some(mut f) = self.file.take() {
            f.out.flush().map_err(|e| Error::io(&f.pending, e))?;
            f.out
                .get_ref()
                .sync_data()
                .map_err(|e| Error::io(&f.pending, e))?;
            let committed_path = self.dir.join(self.name());
            self.transactions.push(FileTransaction {
                checkpoint,
                pending: f.pending,
                committed: committed_path,
            });
            self.seq += 1;
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

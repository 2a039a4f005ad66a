//! The canonical format of one state's entries in one key group, as snapshots hold them
//! whatever the backend that wrote them.
//!
//! Each key, map key and value is its bincode encoding with a length in front, so that a
//! restore into RocksDB, whose keys and values hold the same encodings, copies bytes
//! without decoding a single value (decoding and encoding a 1 KiB `Vec<u8>` a byte at a
//! time was two thirds of a restore's time); only a restore onto the heap decodes.
//!
//! ```text
//! value and list states: FRAMED  count  { key  expires  value }*
//! map states:            FRAMED  count  { key  items  { map-key  expires  value }* }*
//! ```
//! `FRAMED`, `count`, `items` are u64, `expires` an i64 (all little endian), and `key`,
//! `map-key` and `value` a u32 length and that many bytes. Snapshots written before this
//! format are bincode of `[(key, expires, value)]` (maps `[(key, [(map key, expires,
//! value)])]`), which starts with the entry count and never with `FRAMED`: they are still
//! read, through [`Entries::Typed`].

use crate::error::StateError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Marks the framed format: no count of typed entries is this large.
const FRAMED: u64 = u64::MAX;

/// Builds one state's entries of one key group.
pub(crate) struct EntriesWriter {
    out: Vec<u8>,
    count: u64,
    /// Where the item count of the map key being written sits, and that count.
    items: Option<(usize, u64)>,
}

impl EntriesWriter {
    pub(crate) fn new() -> Self {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&FRAMED.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        EntriesWriter {
            out,
            count: 0,
            items: None,
        }
    }

    /// An entry of a value or list state.
    pub(crate) fn entry<K: Serialize, V: Serialize>(
        &mut self,
        key: &K,
        expires: i64,
        value: &V,
    ) -> Result<(), StateError> {
        self.encoded(key)?;
        self.out.extend_from_slice(&expires.to_le_bytes());
        self.encoded(value)?;
        self.count += 1;
        Ok(())
    }

    /// An entry of a value or list state, its key and value encoded already.
    pub(crate) fn raw_entry(
        &mut self,
        key: &[u8],
        expires: i64,
        value: &[u8],
    ) -> Result<(), StateError> {
        self.bytes(key)?;
        self.out.extend_from_slice(&expires.to_le_bytes());
        self.bytes(value)?;
        self.count += 1;
        Ok(())
    }

    /// Starts the items of a map state's key (encoded already).
    pub(crate) fn raw_map_key(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.end_items();
        self.bytes(key)?;
        self.items = Some((self.out.len(), 0));
        self.out.extend_from_slice(&0u64.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// Starts the items of a map state's key.
    pub(crate) fn map_key<K: Serialize>(&mut self, key: &K) -> Result<(), StateError> {
        self.end_items();
        self.encoded(key)?;
        self.items = Some((self.out.len(), 0));
        self.out.extend_from_slice(&0u64.to_le_bytes());
        self.count += 1;
        Ok(())
    }

    /// An item of the map key started last.
    pub(crate) fn map_item<MK: Serialize, V: Serialize>(
        &mut self,
        map_key: &MK,
        expires: i64,
        value: &V,
    ) -> Result<(), StateError> {
        self.encoded(map_key)?;
        self.out.extend_from_slice(&expires.to_le_bytes());
        self.encoded(value)?;
        self.count_item();
        Ok(())
    }

    /// An item of the map key started last, encoded already.
    pub(crate) fn raw_map_item(
        &mut self,
        map_key: &[u8],
        expires: i64,
        value: &[u8],
    ) -> Result<(), StateError> {
        self.bytes(map_key)?;
        self.out.extend_from_slice(&expires.to_le_bytes());
        self.bytes(value)?;
        self.count_item();
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.end_items();
        self.out[8..16].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }

    /// Whether no entry was written.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn count_item(&mut self) {
        if let Some((_, n)) = self.items.as_mut() {
            *n += 1;
        }
    }

    fn end_items(&mut self) {
        if let Some((at, n)) = self.items.take() {
            self.out[at..at + 8].copy_from_slice(&n.to_le_bytes());
        }
    }

    /// `value`'s bincode with its length in front, encoded in place.
    fn encoded<T: Serialize>(&mut self, value: &T) -> Result<(), StateError> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 4]);
        if let Err(e) = bincode::serialize_into(&mut self.out, value) {
            self.out.truncate(at);
            return Err(StateError::encode("state")(e));
        }
        let len = self.out.len() - at - 4;
        let len = u32::try_from(len).map_err(|_| StateError::TooLarge(len))?;
        self.out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let len = u32::try_from(bytes.len()).map_err(|_| StateError::TooLarge(bytes.len()))?;
        self.out.extend_from_slice(&len.to_le_bytes());
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// An entry as the snapshot holds it: encoded key, expiry, encoded value.
pub(crate) type EncodedEntry<'a> = (&'a [u8], i64, &'a [u8]);

/// One state's entries of one key group, as a snapshot holds them.
pub(crate) enum Entries<'a> {
    /// The framed format: read with [`Reader`].
    Framed(Reader<'a>),
    /// The format of older snapshots: bincode of the typed entries.
    Typed(&'a [u8]),
}

impl<'a> Entries<'a> {
    pub(crate) fn of(bytes: &'a [u8]) -> Result<Self, StateError> {
        if !bytes.starts_with(&FRAMED.to_le_bytes()) {
            return Ok(Entries::Typed(bytes));
        }
        let mut reader = Reader {
            rest: &bytes[8..],
            count: 0,
        };
        reader.count = reader.u64()?;
        Ok(Entries::Framed(reader))
    }
}

/// Reads framed entries: [`Reader::next_entry`] for value and list states;
/// [`Reader::next_map_key`] then as many [`Reader::map_item`] as it says for maps.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    /// Entries (map keys) not yet read.
    count: u64,
}

impl<'a> Reader<'a> {
    /// The next `(key, expires, value)`, encoded.
    pub(crate) fn next_entry(&mut self) -> Result<Option<EncodedEntry<'a>>, StateError> {
        if self.count == 0 {
            return self.end().map(|()| None);
        }
        self.count -= 1;
        Ok(Some((self.bytes()?, self.i64()?, self.bytes()?)))
    }

    /// The next map key, encoded, and how many items follow it.
    pub(crate) fn next_map_key(&mut self) -> Result<Option<(&'a [u8], u64)>, StateError> {
        if self.count == 0 {
            return self.end().map(|()| None);
        }
        self.count -= 1;
        Ok(Some((self.bytes()?, self.u64()?)))
    }

    /// An item of the map key read last: `(map key, expires, value)`, encoded.
    pub(crate) fn map_item(&mut self) -> Result<EncodedEntry<'a>, StateError> {
        Ok((self.bytes()?, self.i64()?, self.bytes()?))
    }

    fn end(&self) -> Result<(), StateError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(StateError::Malformed(format!(
                "{} bytes after the last entry",
                self.rest.len()
            )))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.rest.len() < n {
            return Err(StateError::Malformed(format!(
                "{n} bytes expected, {} left",
                self.rest.len()
            )));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, StateError> {
        self.u64().map(|v| v as i64)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        self.take(u32::from_le_bytes(b) as usize)
    }
}

/// Decodes one encoded key, map key or value.
pub(crate) fn decode_one<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    bincode::deserialize(bytes).map_err(StateError::decode("state"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_entries_read_back_as_written_and_damage_is_an_error() {
        let mut w = EntriesWriter::new();
        w.entry(&7u64, 100, &"seven".to_string()).unwrap();
        w.raw_entry(&bincode::serialize(&8u64).unwrap(), i64::MAX, &[1, 2])
            .unwrap();
        let bytes = w.finish();
        let Entries::Framed(mut r) = Entries::of(&bytes).unwrap() else {
            panic!("not framed")
        };
        let (k, e, v) = r.next_entry().unwrap().unwrap();
        assert_eq!(
            (
                decode_one::<u64>(k).unwrap(),
                e,
                decode_one::<String>(v).unwrap()
            ),
            (7, 100, "seven".to_string())
        );
        assert_eq!(r.next_entry().unwrap().unwrap().2, &[1, 2]);
        assert!(r.next_entry().unwrap().is_none());

        let Entries::Framed(mut cut) = Entries::of(&bytes[..bytes.len() - 1]).unwrap() else {
            panic!("not framed")
        };
        cut.next_entry().unwrap();
        assert_eq!(
            cut.next_entry().unwrap_err().to_string(),
            "malformed snapshot entries: 2 bytes expected, 1 left"
        );

        let mut maps = EntriesWriter::new();
        maps.map_key(&1u32).unwrap();
        maps.map_item(&"a", 5, &10u8).unwrap();
        maps.map_item(&"b", 6, &11u8).unwrap();
        maps.map_key(&2u32).unwrap();
        maps.map_item(&"c", 7, &12u8).unwrap();
        let bytes = maps.finish();
        let Entries::Framed(mut r) = Entries::of(&bytes).unwrap() else {
            panic!("not framed")
        };
        let mut read = Vec::new();
        while let Some((k, n)) = r.next_map_key().unwrap() {
            for _ in 0..n {
                let (mk, e, v) = r.map_item().unwrap();
                read.push((
                    decode_one::<u32>(k).unwrap(),
                    decode_one::<String>(mk).unwrap(),
                    e,
                    decode_one::<u8>(v).unwrap(),
                ));
            }
        }
        assert_eq!(
            read,
            vec![
                (1, "a".into(), 5, 10),
                (1, "b".into(), 6, 11),
                (2, "c".into(), 7, 12)
            ]
        );
    }

    #[test]
    fn entries_of_older_snapshots_are_read_as_typed() {
        let old = bincode::serialize(&vec![(7u64, 100i64, "seven".to_string())]).unwrap();
        assert!(matches!(Entries::of(&old).unwrap(), Entries::Typed(_)));
        let empty = bincode::serialize(&Vec::<(u64, i64, u8)>::new()).unwrap();
        assert!(matches!(Entries::of(&empty).unwrap(), Entries::Typed(_)));
    }
}

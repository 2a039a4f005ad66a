//! The Nexmark event types: people register, open auctions, and bid on them.

use crate::time::EventTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Text that is cheap to copy. Generated events point into pools that live as long as the
/// process (one set per seed), so copying or dropping a bid touches no reference count —
/// shared counts are contended cache lines when several threads generate. Events parsed
/// from JSON own their text.
#[derive(Clone)]
pub enum Text {
    Pooled(&'static str),
    Owned(Arc<str>),
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Pooled(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}
impl Eq for Text {}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // From the borrowed text where the format lends it (a received batch): one
        // allocation, where going through a `String` costs two and a copy.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text, E> {
                Ok(Text::Owned(Arc::from(text)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: u64,
    pub name: Text,
    pub email_address: String,
    pub credit_card: String,
    pub city: Text,
    pub state: Text,
    pub date_time: EventTime,
    pub extra: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: u64,
    pub reserve: u64,
    pub date_time: EventTime,
    pub expires: EventTime,
    pub seller: u64,
    pub category: u64,
    pub extra: String,
}

/// A bid. Its strings come from the generator's pools, so generating or copying a bid
/// allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub channel: Text,
    pub url: Text,
    pub date_time: EventTime,
    pub extra: Text,
}

/// One Nexmark event. People and auctions are boxed: they are rare (4 in 50 events), and
/// boxing keeps the common case, a bid, small to move.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Person(Box<Person>),
    Auction(Box<Auction>),
    Bid(Bid),
}

impl Event {
    /// The event's size as the model counts it: 8 bytes per number plus the bytes of each
    /// string. The generator pads `extra` so that averages match the model's.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            Event::Person(p) => {
                8 * 2
                    + p.name.len()
                    + p.email_address.len()
                    + p.credit_card.len()
                    + p.city.len()
                    + p.state.len()
                    + p.extra.len()
            }
            Event::Auction(a) => 8 * 7 + a.item_name.len() + a.description.len() + a.extra.len(),
            Event::Bid(b) => 8 * 4 + b.channel.len() + b.url.len() + b.extra.len(),
        }
    }

    pub fn timestamp(&self) -> EventTime {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

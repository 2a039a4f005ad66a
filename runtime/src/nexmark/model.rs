//! The Nexmark event types: people register, open auctions, and bid on them.

use crate::time::EventTime;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
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

/// A bid. Its strings are shared (`Arc<str>`) with the generator's pools, so generating or
/// copying a bid allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    pub price: u64,
    pub channel: Arc<str>,
    pub url: Arc<str>,
    pub date_time: EventTime,
    pub extra: Arc<str>,
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

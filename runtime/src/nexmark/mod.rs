//! Nexmark: the auction-site benchmark's event model and a deterministic generator.

mod generator;
mod model;

pub use generator::{
    parse_event_line, write_events_jsonl, NexmarkConfig, NexmarkError, NexmarkGenerator,
    CATEGORIES, FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID,
};
pub use model::{Auction, Bid, Event, Person, Text};

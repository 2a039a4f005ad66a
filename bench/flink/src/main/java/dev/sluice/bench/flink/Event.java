package dev.sluice.bench.flink;

/**
 * One Nexmark event: exactly one of the three fields is set. A plain POJO so that Flink
 * serializes it with its POJO serializer (no Kryo fallback).
 */
public class Event {
    public Person person;
    public Auction auction;
    public Bid bid;

    public Event() {}

    public long timestamp() {
        if (bid != null) return bid.dateTime;
        if (auction != null) return auction.dateTime;
        return person.dateTime;
    }
}

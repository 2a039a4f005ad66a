package dev.sluice.bench.flink;

/** A bid; also q0's output record. */
public class Bid implements JsonLine {
    public long auction;
    public long bidder;
    public long price;
    public String channel;
    public String url;
    public long dateTime;
    public String extra;

    public Bid() {}

    @Override
    public void appendJson(StringBuilder b) {
        b.append("{\"auction\":").append(auction)
                .append(",\"bidder\":").append(bidder)
                .append(",\"price\":").append(price)
                .append(",\"channel\":\"").append(channel)
                .append("\",\"url\":\"").append(url)
                .append("\",\"dateTime\":").append(dateTime)
                .append(",\"extra\":\"").append(extra).append("\"}");
    }
}
